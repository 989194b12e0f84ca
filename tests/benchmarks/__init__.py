"""Performance benchmarks (issue 8): `make bench` or `python -m tests.benchmarks --help`.

Every benchmark measures flattrfed's own code and a baseline in the same run, and reports our
figure, the baseline's, their ratio and peak memory. Each benchmark runs in a fresh process;
servers under test run in processes of their own and load comes from yet another process, over
loopback only (127.0.0.1). See README.md in this folder for what each benchmark measures.
"""
