from twisted.application.service import ServiceMaker

configmapdemo = ServiceMaker(
    "configmapdemo",
    "twisted_demo.tap",
    "Serve a Kubernetes ConfigMap file over HTTP and reload it live.",
    "configmapdemo",
)
