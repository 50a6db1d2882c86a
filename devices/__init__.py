"""Field devices: MQTT transport, payload codecs and the device registry."""
