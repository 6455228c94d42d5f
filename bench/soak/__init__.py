"""The soak: kill -9 at random points across everything that writes a node, and a three-node
network under faults; then every acknowledged write must be there and every node file whole.

Run it with `scripts/soak --minutes N [--seed S] [--only kills|network]` (`--list` names the
scenarios). The machinery is in this package (core: scenarios, registry, statistics; procs:
processes and kills; nodes: a node, its agent and its checks; netns: namespaces and link faults;
runner: the command line); the scenarios are the modules of `bench.soak.scenarios`, found by
name, so a new capability joins the soak by adding one module there (see core's docstring).
"""
