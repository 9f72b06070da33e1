"""The evaluation tooling, apart from the engine: simulated traffic (`sim`), how a policy did on a file
(`evaluate`), the offline HTML report (`report`) and the first-run demo (`demo`). Nothing in the engine
or the workers imports it."""
