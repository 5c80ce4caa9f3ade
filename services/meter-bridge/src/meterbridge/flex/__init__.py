"""Demand response: flexibility events in (OpenADR, community MQTT, manual), safe load control out.

`policy` is pure and decides; `controller.FlexController` (a sink fed with readings) keeps
the situation and applies the decisions through the actuators (`relays`, `actuators`);
`store` persists its state so a restart mid-event resumes; `mqttio` is its MQTT connection;
`openadr` its VEN; `entities` describes the HEMS Flex entities (the HA sink announces them).
`meterbridge.app.build_flex` wires the parts.
"""
