"""Triton kernels of exsynth, installed as ``exsynth.kernels``.

Modules here import only torch and triton; the dispatcher in
``exsynth.ops.backends.triton`` is their sole user.
"""
