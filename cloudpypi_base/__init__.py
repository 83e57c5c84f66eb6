"""Small pieces that ``pypi/``, ``storage/`` and ``cdn/`` all need and that belong to none of them.

``settings``: typed reading of one ini section (sizes, durations, booleans,
lists, secrets, paths). ``plugins``: the one loader for versioned entry-point
groups. ``files``: new numbered temporary files (no random names). This
package imports nothing of the other three, so that ``storage`` and ``cdn``
can use it and still know nothing of each other or of ``pypi``.
"""
