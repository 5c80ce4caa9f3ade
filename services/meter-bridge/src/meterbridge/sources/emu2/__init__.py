"""Rainforest EMU-2 / RAVEn smart-meter source (`type: emu2`).

`parser` (pure, streaming), `transport` (serial), `source` (the running `Source`),
`config` (`Emu2SourceConfig`). Nothing is imported here so that loading the config
schema does not load the serial stack.
"""
