"""Flow tests and replay: run definitions in simulated time before they go live.

`process-engine test` runs `*.test.yaml` files (format: `flowtest.spec`);
`process-engine replay --from FILE` runs definitions over recorded telemetry
(`flowtest.replay`). Both drive the live pipeline's Dispatcher on the in-memory
store (`flowtest.simulator`).
"""
