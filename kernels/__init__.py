"""numba kernels for the two hot spots, IoU matching (+ encoding) and batched NMS: CUDA kernels and CPU twins.

The CUDA kernels need a NumPy below 2.5 (setup.cfg ``install_requires``): numba-cuda 0.30 registers an overload
of ``np.row_stack`` when it first compiles a kernel, and NumPy 2.5 removed that function.
"""
