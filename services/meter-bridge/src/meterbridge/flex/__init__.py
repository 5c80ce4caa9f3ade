"""Demand response: flexibility events in (OpenADR, community MQTT, manual), safe load control out.

`policy` is pure and decides; `controller.FlexController` (a sink fed with readings)
applies its decisions through `actuators`, publishes the `entities` to Home Assistant
and persists its state so a restart mid-event resumes.
"""
