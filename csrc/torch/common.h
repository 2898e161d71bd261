// Shared helpers of the torch binding layer (csrc/torch). Includes only the lean torch headers
// (no torch/extension.h: pybind11 breaks the limited API; no ATen/cuda/CUDAContext.h: it needs
// cuBLAS/cuSPARSE headers that minimal toolkits lack).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cuda_runtime.h>
#include <torch/library.h>

// Every CUDA runtime call and every launch goes through this: a failure becomes a Python
// RuntimeError naming the call, never a silent corruption.
#define NVDR_CUDA_CHECK(expr)                                                                    \
  do {                                                                                           \
    cudaError_t nvdr_err_ = (expr);                                                              \
    TORCH_CHECK(nvdr_err_ == cudaSuccess, "Cuda error: ", static_cast<int>(nvdr_err_), " (",     \
                cudaGetErrorString(nvdr_err_), ") in ", #expr);                                  \
  } while (0)

namespace nvdr {

inline cudaStream_t current_stream(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// Device, dtype and layout checks of an op's input against the device of its reference input `ref`
// (e.g. "rast" for interpolate): messages name the op, the input, what was expected and what was given.
inline void check_input(const at::Tensor& t, const char* op, const char* name, at::ScalarType dtype,
                        const at::Device& dev, const char* ref) {
  TORCH_CHECK(t.is_cuda(), op, "(): input ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.device() == dev, op, "(): inputs ", name, " and ", ref, " must reside on the same GPU device (", name,
              " is on ", t.device(), ", ", ref, " on ", dev, ")");
  TORCH_CHECK(t.scalar_type() == dtype, op, "(): input ", name, " must be a ", c10::toString(dtype),
              " tensor, got ", c10::toString(t.scalar_type()));
  TORCH_CHECK(t.is_contiguous(), op, "(): input ", name, " must be a contiguous tensor");
}

}  // namespace nvdr
