// Validate a compose file the way balena's builder does: @balena/compose's parse.normalize
// (balena's 2.4 schema, labels, volumes, depends_on) then parse.parse (image descriptors).
// Usage: node balena_compose_check.js < compose.json   (the compose file as JSON on stdin;
// NODE_PATH points at the npm cache where setup.sh installed @balena/compose@7.4.1)
// Prints the services as JSON on success; exits 1 with balena's error otherwise.
'use strict';
const fs = require('fs');
const { parse } = require('@balena/compose');

try {
    const raw = JSON.parse(fs.readFileSync(0, 'utf8'));
    const composition = parse.normalize(raw);
    const descriptors = parse.parse(composition);
    process.stdout.write(JSON.stringify({
        services: descriptors.map((d) => d.serviceName),
        composition,
    }) + '\n');
} catch (err) {
    process.stderr.write(`balena compose: ${err.name}: ${err.message}\n`);
    process.exit(1);
}
