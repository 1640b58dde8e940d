# ruff: noqa: F821
"""BUILD-file macros for kron's dependency rules (loaded via [GLOBAL].build_file_prelude_globs).

Pants' visibility backend checks each dependency edge against `__dependencies_rules__` (what a
target may depend on) of the BUILD file governing the depending target and `__dependents_rules__`
(who may depend on a target) of the BUILD file governing the dependency. The first matching rule
wins; `!` denies. Rules apply to the declaring directory and every subdirectory without rules of
its own.

Selectors used below:
  "/**"                               the declaring directory's subtree
  "//src/python/kron/contracts/**"    a path from the repo root
  "//3rdparty/python/reqs#fastapi"    a third-party requirement: python_requirements(name="reqs")
                                      in 3rdparty/python generates `3rdparty/python:reqs#fastapi`,
                                      whose rule path is "3rdparty/python/reqs#fastapi"

A violation fails every goal that computes dependencies (test, check, package, and lint through
the kron_dep_rules linter) with "DependencyRuleActionDeniedError ... dependency violation".

To let a deployable use another third-party package, add its requirements.txt project name
(lowercase, as in the target address) to the list passed in its BUILD file.
"""

_KRON = "//src/python/kron"
_REQS = "//3rdparty/python/reqs#"

# Test targets in src/ (python_tests, python_test_utils) get the same internal rules as the code
# plus the shared test helpers and any third-party package.
_TEST_TARGETS = ("<python_tests>", "<python_test_utils>")


def _reqs(names):
    return tuple(_REQS + name for name in names)


def _internal(packages):
    # kron/__init__.py is an ancestor package of everything; ancestor __init__.py files with content
    # become dependencies.
    return (_KRON + "/__init__.py", *(f"{_KRON}/{p}/**" for p in packages))


def _adapters(files):
    # A single module of another package (and that package's __init__.py, an ancestor dependency).
    return tuple(
        path
        for f in files
        for path in (f"{_KRON}/{f}", f"{_KRON}/{f.split('/')[0]}/__init__.py")
    )


def _dependencies_rules(packages, third_party, forbidden_third_party=(), adapters=()):
    """Production code: own subtree, the listed kron packages, the listed third-party packages.

    `third_party` is a list of requirement names, or "*" for any except `forbidden_third_party`.
    """
    if third_party == "*":
        prod_third_party = (*("!" + r for r in _reqs(forbidden_third_party)), _REQS + "*")
    else:
        prod_third_party = _reqs(third_party)
    __dependencies_rules__(
        (
            _TEST_TARGETS,
            "/**",
            *_internal(packages),
            *_adapters(adapters),
            "//src/python/**/conftest.py",
            "//tests/kron_testing/**",
            "//deploy/**",  # manifests and CRDs tests read
            *("!" + r for r in _reqs(forbidden_third_party)),
            _REQS + "*",
            "!*",
        ),
        (
            "*",
            "/**",
            *_internal(packages),
            *_adapters(adapters),
            *prod_third_party,
            "!*",
        ),
    )


def _private_dependents_rules():
    """Nobody outside this subtree may depend on it, except tests and benchmarks."""
    __dependents_rules__(
        (
            "*",
            "/**",
            "//tests/**",
            "//bench/**",
            "//deploy/**",  # docker_image targets package the deployables
            "!*",
        ),
    )


def kron_contracts_rules():
    """kron.contracts: names and pydantic models shared by every deployable. Only pydantic."""
    _dependencies_rules(packages=(), third_party=("pydantic",))


def kron_library_rules(packages=(), forbidden_third_party=()):
    """A shared library (kron.common, kron.agent_core): the listed kron packages and any
    third-party package but `forbidden_third_party`."""
    _dependencies_rules(
        packages=packages, third_party="*", forbidden_third_party=forbidden_third_party
    )


def kron_deployable_rules(packages=("contracts", "common"), third_party=None, adapters=()):
    """A deployable (gateway, scheduler): its own subtree, contracts, common, the NAMED single
    modules of other packages (`adapters`, e.g. "agent_core/composio_tools.py") and only the NAMED
    third-party packages. Nothing else may depend on a deployable."""
    if third_party is None:
        raise ValueError("kron_deployable_rules: name the third-party packages (third_party=[...])")
    _dependencies_rules(packages=packages, third_party=third_party, adapters=adapters)
    _private_dependents_rules()


def kron_worker_rules():
    """kron.worker: the Temporal worker may use every library and any third-party package, but only
    the worker itself, tests and benchmarks may depend on it."""
    _dependencies_rules(packages=("contracts", "common", "agent_core"), third_party="*")
    _private_dependents_rules()
