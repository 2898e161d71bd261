// The Python module object for nvdiffrast._C. The ops themselves are registered with the torch
// dispatcher by static initializers in the other files of csrc/torch (TORCH_LIBRARY_FRAGMENT),
// so importing this module is all it takes to make torch.ops.nvdiffrast.* available.
#include <Python.h>

#include <torch/library.h>

// The one TORCH_LIBRARY block of the namespace; per-op files add their schemas with
// TORCH_LIBRARY_FRAGMENT(nvdiffrast, m) and implementations with TORCH_LIBRARY_IMPL.
TORCH_LIBRARY(nvdiffrast, m) {}

static struct PyModuleDef nvdr_module = {PyModuleDef_HEAD_INIT, "_C", "nvdiffrast CUDA operators", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&nvdr_module); }
