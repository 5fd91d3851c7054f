"""An emulated Speaches (speaches-ai/speaches) for tests: its model management and transcription
API, built from its source and stating those facts itself (facts.py); see app.py for what is and
is not emulated. It imports nothing from the Pendra code it checks."""
