"""MQTT: records, door and terminal states to a broker; signed commands; Home Assistant."""
