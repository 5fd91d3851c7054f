from pendra.testing.openai_compat.app import main

main()
