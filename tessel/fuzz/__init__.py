"""tessel's fuzzer: it checks tessel itself (passes, schedules, templates, code generators).

    gen.py            valid random programs (DSL kernels, op graphs)
    case.py           a test case: program + schedule commands + pipeline + seed (IR text form on disk)
    mutate_ir.py      program and schedule mutators; mutate_passes.py: pipeline mutators
    coverage.py       line + branch coverage feedback (coverage.py)
    oracles.py        run one case and judge it (crash, verify, race, exec, diff, nondet)
    worker.py         cases run in child processes (crashes and hangs are caught there)
    campaign.py       the loop behind `tessel fuzz`; report.py: report.md + coverage.png
    reduce.py         shrink a failing case, keeping its signature
    planted.py        deliberately wrong passes (tests); mutant.py: mutation of tessel's source (evaluation)

Nothing here is imported by `import tessel`; the fuzzer sits on the top floor and may import anything.
"""
