"""Passes: graph passes and tensor-IR passes.

A tensor-IR pass is a plain function Kernel -> Kernel with a docstring: `simplify.simplify`
(folding, algebraic and index simplification), `dce.remove_dead_code` (dead stores and what they
leave behind). The pipelines that string them together live in `tessel.compiler.pipeline`.
Nothing is imported here, so importing one pass does not import the others.
"""
