"""Kernel library: lowering functions that emit NPU programs for tensor operations.

Each kernel is a lowering function that appends to an :class:`Emitter` (a
``ProgramBuilder`` with registers and loops) and takes its tiling as a frozen
dataclass with ``check(shape, config)``; :data:`KERNELS` registers every kind with
its shape parameters and a ``build`` that makes a runnable, checkable case.
"""

from .common import DramLayout, Emitter, KernelError, TensorInfo
from .conv2d import ConvTiling, lower_conv2d
from .eltwise import EltwiseTiling, lower_add, lower_relu
from .gemm import Quant
from .matmul import MatmulTiling, lower_matmul
from .maxpool import PoolTiling, lower_maxpool
from .registry import KERNELS, BundleContents, KernelDef, full_shape

__all__ = ["KERNELS", "KernelDef", "BundleContents", "KernelError", "Emitter", "DramLayout", "TensorInfo",
           "Quant", "MatmulTiling", "ConvTiling", "EltwiseTiling", "PoolTiling", "lower_matmul", "lower_conv2d",
           "lower_relu", "lower_add", "lower_maxpool", "full_shape"]
