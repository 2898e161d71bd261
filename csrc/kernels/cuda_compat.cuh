// Portability across the toolkits we build with (CUDA 11.8 … 13.x) and the arch lists of the matrix.
#pragma once

// __grid_constant__ (CUDA 11.7+, compute_70+) keeps a kernel's parameter struct in the constant
// parameter space even when the kernel indexes into it; older archs/toolkits simply copy it.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
#define NVDR_GRID_CONSTANT
#elif defined(__CUDACC_VER_MAJOR__) && \
    (__CUDACC_VER_MAJOR__ > 11 || (__CUDACC_VER_MAJOR__ == 11 && __CUDACC_VER_MINOR__ >= 7))
#define NVDR_GRID_CONSTANT __grid_constant__
#else
#define NVDR_GRID_CONSTANT
#endif
