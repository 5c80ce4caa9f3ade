# shellcheck shell=sh
# USB serial adapters inside a balena container (sourced by the meter-bridge and zigbee2mqtt
# entrypoints; POSIX sh, busybox too: the zigbee2mqtt image is Alpine).
#
# Why this exists: balena's supervisor ignores `device_cgroup_rules`, and `devices:` stops a
# container from being created when the adapter is missing, so both services run `privileged`
# (the one field the supervisor honours that lets a container open a device plugged in later).
# A privileged container's /dev is a copy made when the container was created: it has no node
# for a stick plugged in afterwards and no /dev/serial/by-id (that is the host's udev). So we
# keep, from sysfs (which shows the host's devices):
#   - a node /dev/ttyACMn or /dev/ttyUSBn for every USB serial adapter present, and
#   - /dev/serial/by-id/usb-<manufacturer>_<product>[_<serial>]-if<NN>[-port<N>] links named
#     as udev's 60-serial.rules names them, so the README's by-id paths work and survive a
#     replug that changes the tty number.
# Running udevd in the container would need udev in both images and a devtmpfs mount; this is
# the part of it these two services need, and it can be tested without a kernel.
#
# Settings (the tests point them at a fake tree): SYSFS_TTY_DIR (/sys/class/tty), DEV_DIR (/dev).

usb_sysfs_tty=${SYSFS_TTY_DIR:-/sys/class/tty}
usb_dev=${DEV_DIR:-/dev}

# usb_log MESSAGE: one line on stderr.
usb_log() {
    echo "usb-serial: $*" >&2
}

# usb_device_dir TTYDIR: the sysfs directory of the USB device behind a tty (the first parent
# with idVendor), empty when the tty is not on USB.
usb_device_dir() {
    dir=$(readlink -f "$1/device" 2>/dev/null) || return 0
    while [ -n "$dir" ] && [ "$dir" != / ]; do
        if [ -r "$dir/idVendor" ]; then
            echo "$dir"
            return 0
        fi
        dir=${dir%/*}
    done
}

# usb_attr DIR NAME: the attribute NAME of sysfs directory DIR, empty when absent.
usb_attr() {
    [ -r "$1/$2" ] && head -n 1 "$1/$2"
    return 0
}

# usb_clean TEXT: TEXT as udev puts it into a name: whitespace runs become `_`, then every
# character outside [A-Za-z0-9#+.:=@_-] becomes `_` (udev's replace_whitespace + replace_chars).
usb_clean() {
    printf '%s' "$1" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e 's/[[:space:]][[:space:]]*/_/g' \
        -e 's/[^A-Za-z0-9#+.:=@_-]/_/g'
}

# usb_by_id_name TTYDIR: the tty's /dev/serial/by-id name (60-serial.rules:
# usb-$ID_SERIAL-if$ID_USB_INTERFACE_NUM, plus -port$N for usb-serial ports), empty when not USB.
usb_by_id_name() {
    device=$(usb_device_dir "$1")
    [ -n "$device" ] || return 0
    vendor=$(usb_attr "$device" manufacturer)
    [ -n "$vendor" ] || vendor=$(usb_attr "$device" idVendor)
    model=$(usb_attr "$device" product)
    [ -n "$model" ] || model=$(usb_attr "$device" idProduct)
    serial=$(usb_attr "$device" serial)
    name="usb-$(usb_clean "$vendor")_$(usb_clean "$model")"
    [ -z "$serial" ] || name="${name}_$(usb_clean "$serial")"
    tty_device=$(readlink -f "$1/device")
    interface=$(usb_attr "$tty_device" bInterfaceNumber)
    [ -n "$interface" ] || interface=$(usb_attr "${tty_device%/*}" bInterfaceNumber)
    name="$name-if${interface:-00}"
    port=$(usb_attr "$tty_device" port_number)
    [ -z "$port" ] || name="$name-port$port"
    echo "$name"
}

# usb_node_numbers NODE: "major:minor" of a character device node, in decimal.
usb_node_numbers() {
    # shellcheck disable=SC2046,SC2183 # stat's two hex fields are printf's two arguments
    printf '%d:%d' $(stat -L -c '0x%t 0x%T' "$1")
}

# usb_serial_sync: make the nodes and by-id links of the adapters present now, drop the ones of
# adapters gone. Idempotent and cheap: the entrypoints run it at start and then every few seconds.
# A subshell without errexit: both entrypoints run `set -eu`, and a stick unplugged while a pass
# reads its sysfs entries makes a read fail half-way; under errexit that ended the hot-plug loop
# for good (seen in CI: a replugged EMU-2 never got its by-id link back). A pass that meets a
# vanished device skips it; the next pass sees the tree as it is.
usb_serial_sync() (
    set +e
    mkdir -p "$usb_dev/serial/by-id"
    for sys in "$usb_sysfs_tty"/ttyUSB* "$usb_sysfs_tty"/ttyACM*; do
        [ -r "$sys/dev" ] || continue
        tty=${sys##*/}
        numbers=$(head -n 1 "$sys/dev" 2>/dev/null) || continue
        case "$numbers" in *[0-9]:[0-9]*) ;; *) continue ;; esac
        node="$usb_dev/$tty"
        if [ -e "$node" ] && [ "$(usb_node_numbers "$node")" != "$numbers" ]; then
            rm -f "$node"
        fi
        if [ ! -e "$node" ]; then
            mknod -m 0660 "$node" c "${numbers%%:*}" "${numbers##*:}" || continue
            chgrp dialout "$node" 2>/dev/null || true
            usb_log "serial device $node ($(usb_by_id_name "$sys"))"
        fi
        id=$(usb_by_id_name "$sys")
        [ -n "$id" ] || continue
        link="$usb_dev/serial/by-id/$id"
        if [ "$(readlink "$link" 2>/dev/null)" != "../../$tty" ]; then
            ln -sfn "../../$tty" "$link"
        fi
    done
    for link in "$usb_dev"/serial/by-id/*; do
        [ -L "$link" ] || continue
        target=$(readlink "$link")
        [ -r "$usb_sysfs_tty/${target##*/}/dev" ] || rm -f "$link"
    done
    for node in "$usb_dev"/ttyUSB* "$usb_dev"/ttyACM*; do
        # only nodes (what we make), never a symlink someone else put there
        [ -c "$node" ] && [ ! -L "$node" ] || continue
        if [ ! -r "$usb_sysfs_tty/${node##*/}/dev" ]; then
            rm -f "$node"
            usb_log "serial device $node went away"
        fi
    done
    exit 0
)
