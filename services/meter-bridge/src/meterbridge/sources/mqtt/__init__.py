"""`type: mqtt`: any device that publishes numbers or JSON over MQTT (Tasmota, ESPHome, OpenEVSE, DIY)."""
