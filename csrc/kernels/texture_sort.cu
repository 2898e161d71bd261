// Stable key sort + segment discovery for the deterministic backward passes (see texture_common.cuh).
#include <cub/device/device_radix_sort.cuh>

#include "texture_common.cuh"

namespace {

__global__ void iota_kernel(uint32_t* out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = (uint32_t)i;
}

__global__ void find_heads_kernel(const uint64_t* keys, int64_t n, int* heads, int* count) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint64_t k = keys[i];
    if (k == NVDR_SKIP_KEY) continue;
    if (i == 0 || keys[i - 1] != k) heads[atomicAdd(count, 1)] = (int)i;
  }
}

int bits_for(uint64_t v) {
  int b = 0;
  while (b < 64 && (v >> b) != 0) ++b;
  return b;
}

}  // namespace

cudaError_t nvdr_sort_segments(const uint64_t* keys, int64_t n, uint64_t max_key, const NvdrAllocator& alloc,
                               cudaStream_t stream, NvdrSortedSegments* out) {
  if (n < 0 || n >= (int64_t(1) << 31)) return cudaErrorInvalidValue;
  int nn = (int)(n > 0 ? n : 1);
  uint32_t* idx_in = alloc.get<uint32_t>(nn);
  uint32_t* idx_out = alloc.get<uint32_t>(nn);
  uint64_t* keys_out = alloc.get<uint64_t>(nn);
  int* heads = alloc.get<int>(nn);
  int* count = alloc.get<int>(1);
  if (!idx_in || !idx_out || !keys_out || !heads || !count) return cudaErrorMemoryAllocation;
  NVDR_RETURN_IF_ERROR(cudaMemsetAsync(count, 0, sizeof(int), stream));
  out->keys = keys_out;
  out->order = idx_out;
  out->seg_start = heads;
  out->seg_count = count;
  out->n = n;
  out->max_segments = n;
  if (n == 0) return cudaSuccess;

  iota_kernel<<<nvdr_grid_1d(n, 256), 256, 0, stream>>>(idx_in, n);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  // Skip keys are all-ones: sort every bit when they can occur above max_key's range.
  int end_bit = bits_for(max_key);
  if (end_bit < 64) {
    // Skip keys would compare equal to (2^end_bit - 1) in the truncated bit range; include one more
    // bit so they sort after every real key.
    end_bit += 1;
  }
  size_t temp_bytes = 0;
  NVDR_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys, keys_out, idx_in, idx_out, nn, 0,
                                                       end_bit, stream));
  void* temp = alloc.alloc(alloc.self, temp_bytes + 16);
  if (!temp) return cudaErrorMemoryAllocation;
  NVDR_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, keys_out, idx_in, idx_out, nn, 0,
                                                       end_bit, stream));
  find_heads_kernel<<<nvdr_grid_1d(n, 256), 256, 0, stream>>>(keys_out, n, heads, count);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return cudaSuccess;
}
