"""The upload pipeline.

The form's metadata checks (metadata), distribution-file checks (distfile),
spooling and hashing (spool), and the pipeline that stores, then commits (pipeline).
"""
