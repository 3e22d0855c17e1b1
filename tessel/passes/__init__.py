"""Passes: graph passes and tensor-IR passes.

A tensor-IR pass is a plain function `f(kernel, **params) -> Kernel` with a docstring:
`simplify.simplify` (folding, algebraic and index simplification), `dce.remove_dead_code` (dead
stores and what they leave behind), `unroll.unroll` (small constant loops expanded in the IR),
`storage.rewrite_storage` (allocations sunk to their uses, disjoint lifetimes sharing storage),
`hoist.hoist_invariants` (loop-invariant index arithmetic as lets). The pipelines that string them
together, as data (names and parameters), live in `tessel.compiler.pipeline`, whose registry also
names the CUDA printer's vectorisation decision (`tessel.codegen.cuda_vectorize.decide_vector_loops`).
Nothing is imported here, so importing one pass does not import the others.
"""
