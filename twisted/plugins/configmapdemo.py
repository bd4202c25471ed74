from twisted.application.service import ServiceMaker

configmapdemo = ServiceMaker(
    "configmapdemo",
    "twisted_demo.tap",
    "Serve a Kubernetes ConfigMap file over HTTP and reload it live.",
    "configmapdemo",
)
configmapdemo_webhook = ServiceMaker(
    "configmapdemo-webhook",
    "twisted_demo.webhook_tap",
    "Refuse a broken ConfigMap at the API server: a validating admission webhook.",
    "configmapdemo-webhook",
)
