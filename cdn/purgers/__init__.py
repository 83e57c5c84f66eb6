"""The built-in purgers, one module each: ``fastly``, ``cloudfront``, ``varnish``."""
