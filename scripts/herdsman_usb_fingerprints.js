// zigbee-herdsman's own USB adapter discovery, run from its npm package (dist/adapter/adapterDiscovery.js).
//
//   node scripts/herdsman_usb_fingerprints.js PACKAGE_DIR table   -> its USB_FINGERPRINTS as JSON
//   node scripts/herdsman_usb_fingerprints.js PACKAGE_DIR match   <- JSON list of serialport portInfos
//                                                                  -> herdsman's choice for each
//
// The module is loaded as Node loads it, with two changes: the I/O modules it requires at the top
// (bonjour-service for mDNS, ./serialPort for the serial port list) are empty stand-ins, because
// they need the package's native dependencies and the matching never calls them; and one line
// appended to the module's text exports USB_FINGERPRINTS, which herdsman keeps module-private.
// The matching itself is herdsman's exported findUsbAdapterBestMatch, as it runs on Linux.
"use strict";

const fs = require("node:fs");
const Module = require("node:module");
const path = require("node:path");

const [packageDir, mode] = process.argv.slice(2);
const file = path.resolve(packageDir, "dist/adapter/adapterDiscovery.js");
const STUBBED = new Set(["bonjour-service", "./serialPort"]);

const load = Module._load;
Module._load = function (request, parent, isMain) {
    if (parent && parent.filename === file && STUBBED.has(request)) {
        return {};
    }
    return load.call(this, request, parent, isMain);
};
const discovery = new Module(file, module);
discovery.filename = file;
discovery.paths = Module._nodeModulePaths(path.dirname(file));
discovery._compile(`${fs.readFileSync(file, "utf8")}\nexports.USB_FINGERPRINTS = USB_FINGERPRINTS;\n`, file);
const { USB_FINGERPRINTS, findUsbAdapterBestMatch } = discovery.exports;
if (typeof findUsbAdapterBestMatch !== "function" || typeof USB_FINGERPRINTS !== "object") {
    throw new Error(`${file}: no USB_FINGERPRINTS/findUsbAdapterBestMatch: herdsman's discovery changed`);
}

if (mode === "table") {
    process.stdout.write(`${JSON.stringify(USB_FINGERPRINTS)}\n`);
} else if (mode === "match") {
    const ports = JSON.parse(fs.readFileSync(0, "utf8"));
    const choices = ports.map((portInfo) => {
        const best = findUsbAdapterBestMatch(undefined, portInfo, false);
        return best ? { adapter: best[0], score: best[1][1], options: best[1][2].options ?? {} } : null;
    });
    process.stdout.write(`${JSON.stringify(choices)}\n`);
} else {
    throw new Error("usage: herdsman_usb_fingerprints.js PACKAGE_DIR table|match");
}
