"""Per-op adapters of the CUDA backend; each module loads ``nvdiffrast._C`` through the loader."""
