"""The release pipeline: ``python -m ci {matrix,build,repair,validate,publish,serve,release}``."""
