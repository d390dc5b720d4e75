"""numba kernels for the two hot spots, IoU matching (+ encoding) and batched NMS: CUDA kernels and CPU twins."""
