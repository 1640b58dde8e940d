# `prove` is also a directory under bench/ (the full suites, no __init__.py there): make this
# package span both, so `prove.chaos` (bench) and `prove.chaos_test` (here) import side by side.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
