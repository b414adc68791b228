"""The in-memory InstanceStore: flow tests, replay and the contract suite."""
