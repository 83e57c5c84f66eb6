"""Mirror (``cloudpypi mirror``) and proxy (pull-through) of an upstream index; docs/upstream.md."""
