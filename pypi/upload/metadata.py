"""Turns the upload form's metadata fields into validated release metadata.

``packaging.metadata`` checks every field against the core metadata spec
(Metadata.from_raw with validation: names, versions, specifiers, requirements,
SPDX license expressions, License-File paths, Dynamic); on top of it come the
rules pypi.org adds at upload (warehouse ``forklift/metadata.py``), with its
messages: no local versions, summary of at most 512 characters, valid e-mail
addresses, known and current trove classifiers, http(s) URLs, Project-URL
labels of at most 32 characters, no direct-URL requirements, License and
License-Expression not both. A NUL byte in any field is refused.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from typing import Any

from packaging.metadata import ExceptionGroup, InvalidMetadata, Metadata, RawMetadata
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from trove_classifiers import all_classifiers, deprecated_classifiers

from pypi.index.packages import TEXT_FIELDS
from pypi.upload.spool import Form

_NAME_CHARS = "Start and end with a letter or numeral containing only ASCII numeric and '.', '_' and '-'."
CORE_METADATA = "https://packaging.python.org/specifications/core-metadata"
LOCAL_VERSIONS = (
    "https://packaging.python.org/en/latest/specifications/version-specifiers/#local-version-identifiers"
)
#: pypi.org's limits on field lengths.
MAX_SUMMARY = 512
MAX_URL_LABEL = 32
#: The release's text columns taken as sent; the others are set from the form or the parsed metadata.
_RAW_TEXT_FIELDS = tuple(
    f for f in TEXT_FIELDS if f not in {"license_expression", "description", "keywords", "platform"}
)
#: The fields a PEP 643 ``Dynamic`` entry may name (as pypi.org accepts them).
DYNAMIC_FIELDS = frozenset(
    f.lower()
    for f in (
        "Platform Supported-Platform Summary Description Description-Content-Type Keywords Home-Page "
        "Download-Url Author Author-Email Maintainer Maintainer-Email License License-Expression "
        "License-File Classifier Requires-Dist Requires-Python Requires-External Project-Url "
        "Provides-Extra Provides-Dist Obsoletes-Dist Requires Provides Obsoletes Import-Name "
        "Import-Namespace"
    ).split()
)
#: Form field -> RawMetadata key, for single-valued text fields.
_TEXT = {
    "summary": "summary",
    "description_content_type": "description_content_type",
    "author": "author",
    "author_email": "author_email",
    "maintainer": "maintainer",
    "maintainer_email": "maintainer_email",
    "license": "license",
    "license_expression": "license_expression",
    "home_page": "home_page",
    "download_url": "download_url",
}
#: Form field -> RawMetadata key, for multi-valued fields (twine sends License-File as license_file).
_LISTS = {
    "classifiers": "classifiers",
    "requires_dist": "requires_dist",
    "provides_extra": "provides_extra",
    "license_file": "license_files",
    "license_files": "license_files",
    "dynamic": "dynamic",
}


class InvalidMetadataError(ValueError):
    """A metadata field is missing or invalid; the message names it."""


@dataclass(frozen=True)
class ReleaseMetadata:
    name: str
    version: Version
    #: Release columns (see pypi.index.packages.release_values).
    fields: dict[str, Any]


def _text(form: Form, key: str) -> str:
    return form.get(key).strip()


def _values(form: Form, key: str) -> list[str]:
    return [v for v in form.getall(key) if v.strip()]


def from_form(form: Form) -> ReleaseMetadata:
    """Validate name, version and the other metadata fields (``packaging`` plus pypi.org's rules).

    distutils sends ``UNKNOWN`` for every field it has no value for: such values are dropped,
    as pypi.org does, before anything is checked.
    """
    for key in list(form.fields):
        form.fields[key] = [v for v in form.fields[key] if v.strip() != "UNKNOWN"]
    for key, values in form.fields.items():
        if any("\x00" in v for v in values):
            raise InvalidMetadataError(f"Invalid value for {key}. Error: Null bytes are not allowed.")
    name = _text(form, "name")
    if not name:
        raise InvalidMetadataError(f"'' is an invalid value for Name. Error: {_NAME_CHARS}")
    version_text = _text(form, "version")
    try:
        version = Version(version_text)
    except InvalidVersion:
        raise InvalidMetadataError(
            f"{version_text!r} is an invalid value for Version. "
            "Error: Use a version string that complies with PEP 440."
        ) from None

    requires_python = _text(form, "requires_python")
    if requires_python:
        try:
            SpecifierSet(requires_python)
        except InvalidSpecifier:
            raise InvalidMetadataError(
                f"{requires_python!r} is an invalid value for Requires-Python. "
                "Error: Use a valid PEP 440 specifier."
            ) from None

    project_urls: dict[str, str] = {}
    for entry in form.getall("project_urls"):
        label, sep, url = entry.partition(",")
        if not sep:
            raise InvalidMetadataError(
                f"{entry!r} is an invalid value for Project-URL. Error: Use 'Label, URL'."
            )
        project_urls[label.strip()] = url.strip()

    sent_version = _text(form, "metadata_version") or "1.0"
    raw: RawMetadata = {"metadata_version": sent_version, "name": name, "version": version_text}
    for key, raw_key in _TEXT.items():
        if _text(form, key):
            raw[raw_key] = _text(form, key)  # type: ignore[literal-required]
    if requires_python:
        raw["requires_python"] = requires_python
    for key, raw_key in _LISTS.items():
        if _values(form, key):
            raw.setdefault(raw_key, []).extend(_values(form, key))  # type: ignore[misc]
    # The sent Metadata-Version must be one packaging knows; the fields are
    # checked as at least 2.1 so an old client's "1.0" does not reject fields it sent.
    _validate({"metadata_version": sent_version, "name": name, "version": version_text})
    meta = _validate({**raw, "metadata_version": _at_least_2_1(sent_version)})
    _pypi_rules(meta, raw, project_urls)

    if "\n" in raw.get("summary", ""):
        raise InvalidMetadataError(
            "'summary' is an invalid value for Summary. Error: Use a single line only."
        )
    fields: dict[str, Any] = {key: raw.get(key, "") for key in _RAW_TEXT_FIELDS}
    fields["license_expression"] = meta.license_expression or ""
    fields["license_files"] = raw.get("license_files", [])
    fields["dynamic"] = raw.get("dynamic", [])
    fields["description"] = form.get("description")
    fields["keywords"] = _text(form, "keywords")
    fields["platform"] = ", ".join(form.getall("platform"))
    fields["classifiers"] = form.getall("classifiers")
    fields["requires_dist"] = form.getall("requires_dist")
    fields["provides_extra"] = form.getall("provides_extra")
    fields["project_urls"] = project_urls
    return ReleaseMetadata(name=name, version=version, fields=fields)


def _at_least_2_1(sent: str) -> str:
    try:
        return sent if Version(sent) >= Version("2.1") else "2.1"
    except InvalidVersion:
        return sent


def _validate(raw: RawMetadata) -> Metadata:
    try:
        return Metadata.from_raw(raw, validate=True)
    except ExceptionGroup as group:
        first = group.exceptions[0]
        if isinstance(first, InvalidMetadata):
            field_name = first.field.replace("_", "-").title()
            if first.field == "name":
                raise InvalidMetadataError(
                    f"{raw.get('name')!r} is an invalid value for Name. Error: {_NAME_CHARS}"
                ) from None
            raise InvalidMetadataError(f"Invalid value for {field_name}. Error: {first}") from None
        raise InvalidMetadataError(f"Invalid metadata: {first}") from None


def valid_url(url: str) -> bool:
    """An http(s) URL with a valid scheme, host, port, path and query (as pypi.org checks)."""
    import rfc3986.exceptions  # here: only uploads need it (every command's start-up otherwise)
    import rfc3986.validators

    validator = (
        rfc3986.validators.Validator()
        .allow_schemes("http", "https")
        .require_presence_of("scheme")
        .check_validity_of("scheme", "host", "port", "path", "query")
    )
    try:
        validator.validate(rfc3986.uri_reference(url).normalize())
    except rfc3986.exceptions.ValidationError:
        return False
    return True


def _refuse(message: str, see: str = CORE_METADATA) -> InvalidMetadataError:
    message = message if message.endswith(".") else message + "."
    return InvalidMetadataError(f"{message} See {see} for more information.")


def _pypi_rules(meta: Metadata, raw: RawMetadata, project_urls: dict[str, str]) -> None:
    """pypi.org's upload rules on top of the core metadata spec; the first broken one is raised."""
    if meta.version.local:
        raise _refuse(f"The use of local versions in '{meta.version}' is not allowed.", LOCAL_VERSIONS)
    if len(meta.summary or "") > MAX_SUMMARY:
        raise _refuse(f"'summary' field must be {MAX_SUMMARY} characters or less.")
    import email_validator  # here: only uploads need it (every command's start-up otherwise)

    for field in ("author_email", "maintainer_email"):
        for _display, address in email.utils.getaddresses([raw.get(field, "")]):  # type: ignore[list-item]
            if not address:
                continue
            try:
                email_validator.validate_email(address, check_deliverability=False)
            except email_validator.EmailNotValidError as exc:
                raise _refuse(f"{address!r} is not a valid email address: {exc}") from None
    for classifier in sorted(set(meta.classifiers or [])):
        if classifier not in all_classifiers:
            raise _refuse(f"{classifier!r} is not a valid classifier.")
        if classifier in deprecated_classifiers:
            instead = deprecated_classifiers[classifier]
            raise _refuse(
                f"The classifier {classifier!r} has been deprecated"
                + (f", use one of {instead} instead." if instead else ".")
            )
    for field in ("home_page", "download_url"):
        url = raw.get(field)
        if url and not valid_url(url):  # type: ignore[arg-type]
            raise _refuse(f"{url!r} is not a valid url.")
    for label, url in project_urls.items():
        if not label:
            raise _refuse("Must have a label")
        if len(label) > MAX_URL_LABEL:
            raise _refuse(f"{label!r} must be {MAX_URL_LABEL} characters or less.")
        if not url:
            raise _refuse("Must have a URL")
        if not valid_url(url):
            raise _refuse(f"{url!r} is not a valid url")
    for text in raw.get("requires_dist", []):
        try:
            requirement = Requirement(text)
        except InvalidRequirement:  # packaging already refused it
            continue
        if requirement.url is not None:
            raise _refuse(f"Can't have direct dependency: {requirement}")
    for key in raw.get("dynamic", []):
        if key.lower() not in DYNAMIC_FIELDS:
            raise _refuse(f"Dynamic field {key!r} is not a valid dynamic field.")
    if meta.license and meta.license_expression:
        raise _refuse(
            "License is deprecated when License-Expression is present. "
            "Only License-Expression should be present."
        )
