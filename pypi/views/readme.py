"""Renders a release's description to safe HTML with readme_renderer (as pypi.org does)."""

from __future__ import annotations

from html import escape


def render_description(text: str, content_type: str) -> str:
    """Sanitized HTML for the description; plain escaped text when it cannot be rendered."""
    if not text:
        return ""
    # Imported on first use: docutils, pygments and the markdown stack cost each
    # worker process ~15 MB, and only the HTML project pages need them.
    import readme_renderer.markdown
    import readme_renderer.rst
    import readme_renderer.txt

    kind = (content_type or "text/x-rst").split(";")[0].strip().lower()
    html: str | None
    if kind == "text/markdown":
        variant = "GFM" if "variant=commonmark" not in (content_type or "").lower() else "CommonMark"
        html = readme_renderer.markdown.render(text, variant=variant)
    elif kind == "text/plain":
        html = readme_renderer.txt.render(text)
    else:
        html = readme_renderer.rst.render(text)
    if html is None:
        return f"<pre>{escape(text)}</pre>"
    return html
