import os

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def splits():
    from backdoor_utils.data import load_splits

    return load_splits(n_train=2000)
