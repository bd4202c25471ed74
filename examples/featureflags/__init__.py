"""
Feature flags served over HTTP from a ConfigMap, reloaded live: a second
app on C{twisted_demo.live}.  Run it with C{python -m featureflags FILE}.
"""
