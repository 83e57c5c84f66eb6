from setuptools import find_packages, setup

setup(
    name="cloudpypi",
    version="0.1.0",
    description="A Python package index that keeps files in object storage behind a CDN",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(
        include=["pypi", "pypi.*", "storage", "storage.*", "cdn", "cdn.*"]
        + ["cloudpypi_base", "cloudpypi_base.*"],
    ),
    package_data={"pypi": ["templates/*.html", "index/schema/*.sql"], "cdn": ["varnish/*.vcl"]},
    install_requires=[
        "WebOb>=1.8",
        "gunicorn>=23",
        "packaging>=24.2",  # packaging.licenses (SPDX License-Expression)
        "trove-classifiers",
        "email-validator>=2",
        "rfc3986>=2",
        "argon2-cffi>=21",
        "readme_renderer[md]>=37",
        "Jinja2>=3.1",
        "multipart>=1.2",
        "urllib3>=2",  # the Swift backend's HTTP connections (storage/swift.py)
    ],
    extras_require={
        "postgres": ["psycopg2-binary>=2.9"],
        "s3": ["boto3>=1.28"],
        "swift": ["python-swiftclient>=4.0"],
        # CloudFront signed URLs for private files ([cdn] signing_key_id / signing_key_file).
        "cloudfront": ["boto3>=1.28", "cryptography>=41"],
        "all": ["psycopg2-binary>=2.9", "boto3>=1.28", "python-swiftclient>=4.0", "cryptography>=41"],
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",
            "WebTest>=3",
            "moto[server]>=5",
            "requests>=2.28",
            "twine>=4,<6.2",
            "build>=1",
            "ruff",
            "cryptography>=41",
        ],
    },
    entry_points={
        "console_scripts": ["cloudpypi = pypi.cli:main"],
        "cloudpypi.storage.v1": [
            "local = storage.local:LocalStorage",
            "s3 = storage.s3:S3Storage",
            "swift = storage.swift:SwiftStorage",
        ],
        "cloudpypi.purgers.v1": [
            "none = cdn.purge:NullPurger",
            "fastly = cdn.purgers.fastly:FastlyPurger",
            "cloudfront = cdn.purgers.cloudfront:CloudFrontPurger",
            "varnish = cdn.purgers.varnish:VarnishPurger",
        ],
    },
)
