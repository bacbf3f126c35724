import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: torch's intra-op threads only add contention (on a loaded 2-core machine
    a 10 x 10 oracle call went from ~20 us to milliseconds). Restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
