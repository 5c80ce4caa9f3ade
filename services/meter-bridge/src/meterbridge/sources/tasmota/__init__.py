"""`type: tasmota`: Tasmota plugs and meters that announce themselves on `tasmota/discovery/#`."""
