"""
Benchmarks for configmapdemo: reload latency, throughput, reload storms,
soak, the cost of the config read and start-up, measured against a real
C{twistd -n configmapdemo} process.  Run with C{python -m bench}.
"""
