"""The registry's table of rooms: it names exactly what each room registers, and a lookup
imports the one room that owns the method."""

from __future__ import annotations

import subprocess
import sys

from polykey.agent.methods import METHODS, ROOMS


def test_the_table_names_the_room_of_every_registered_method() -> None:
    registered = {name: METHODS.get(name).fn.__module__.rsplit(".", 1)[1] for name in METHODS}
    assert registered == dict(ROOMS)


def test_looking_up_a_method_imports_only_its_room() -> None:
    code = (
        "import sys\n"
        "from polykey.agent import methods\n"
        "rooms = lambda: sorted(m.rsplit('.', 1)[1] for m in sys.modules\n"
        "    if m.startswith('polykey.agent.methods.'))\n"
        "print(rooms())\n"
        "assert 'secrets.cat' in methods.METHODS\n"
        "print(rooms())\n"
        "assert 'no.such' not in methods.METHODS\n"
        "print(rooms())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    before, one, every = out.stdout.splitlines()
    assert before == "[]"
    assert one == "['secrets']"
    assert every == str(sorted(set(ROOMS.values())))
