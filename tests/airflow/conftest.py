"""The Airflow tests run in .venv-airflow (`make test-airflow`), never in the main venv.

The main environment has no Airflow (`make test` also passes --ignore=tests/airflow);
a bare `pytest` there must not fail on `import airflow`. In the Airflow environment
nothing is skipped: a broken Airflow install fails the tests.
"""

import importlib.util

if importlib.util.find_spec("airflow") is None:
    collect_ignore_glob = ["test_*.py"]
