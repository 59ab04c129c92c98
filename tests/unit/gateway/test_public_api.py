"""The package's public surface is exactly its sorted __all__, each name documented."""

import inspect

import fedfabric.gateway as gateway


def test_all_is_sorted() -> None:
    assert gateway.__all__ == sorted(gateway.__all__)


def test_all_lists_every_public_name() -> None:
    public = {
        name
        for name, value in vars(gateway).items()
        if not name.startswith("_")
        and not (inspect.ismodule(value) and name not in {"hash", "signers"})
    }

    assert public == set(gateway.__all__)


def test_every_public_name_has_a_docstring() -> None:
    for name in gateway.__all__:
        assert inspect.getdoc(getattr(gateway, name)), name
