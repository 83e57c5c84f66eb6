"""Turns the upload form's metadata fields into validated release metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from packaging.metadata import ExceptionGroup, InvalidMetadata, Metadata, RawMetadata
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from pypi.upload.spool import Form

_NAME_CHARS = "Start and end with a letter or numeral containing only ASCII numeric and '.', '_' and '-'."


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


def from_form(form: Form) -> ReleaseMetadata:
    """Validate name, version and the other metadata fields (PEP 440/508/566 via ``packaging``)."""
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

    raw: RawMetadata = {"metadata_version": _text(form, "metadata_version") or "1.0"}
    raw["name"] = name
    raw["version"] = version_text
    for key in (
        "summary",
        "description_content_type",
        "author",
        "author_email",
        "maintainer",
        "maintainer_email",
        "license",
        "home_page",
        "download_url",
    ):
        if _text(form, key):
            raw[key] = _text(form, key)  # type: ignore[literal-required]
    if requires_python:
        raw["requires_python"] = requires_python
    for key in ("classifiers", "requires_dist", "provides_extra"):
        if form.getall(key):
            raw[key] = form.getall(key)  # type: ignore[literal-required]
    # The sent Metadata-Version must be one packaging knows; the fields are
    # checked as 2.1 so an old client's "1.0" does not reject fields it sent.
    _validate({"metadata_version": raw["metadata_version"], "name": name, "version": version_text})
    _validate({**raw, "metadata_version": "2.1"})

    if "\n" in raw.get("summary", ""):
        raise InvalidMetadataError(
            "'summary' is an invalid value for Summary. Error: Use a single line only."
        )
    fields = {
        key: raw.get(key, "")
        for key in (
            "metadata_version",
            "summary",
            "description_content_type",
            "author",
            "author_email",
            "maintainer",
            "maintainer_email",
            "license",
            "home_page",
            "download_url",
            "requires_python",
        )
    }
    fields["description"] = form.get("description")
    fields["keywords"] = _text(form, "keywords")
    fields["platform"] = ", ".join(form.getall("platform"))
    fields["classifiers"] = form.getall("classifiers")
    fields["requires_dist"] = form.getall("requires_dist")
    fields["provides_extra"] = form.getall("provides_extra")
    fields["project_urls"] = project_urls
    return ReleaseMetadata(name=name, version=version, fields=fields)


def _validate(raw: RawMetadata) -> None:
    try:
        Metadata.from_raw(raw, validate=True)
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
