"""The curated catalogue of models Pendra can install on workers (``loader`` validates
``catalogue.yaml`` and resolves names to entries)."""

from pendra.catalogue.loader import Catalogue, CatalogueEntry, Variant, load_catalogue

__all__ = ["Catalogue", "CatalogueEntry", "Variant", "load_catalogue"]
