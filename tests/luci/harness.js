'use strict';
/*
 * Node side of the LuCI stand-ins: a fresh stand-in environment (minidom
 * document, the app's module sources read from luci-app-cpe-tunnel's htdocs)
 * with LuCI's globals (L, E, _, N_) installed, plus helpers the tests share.
 */

const fs = require('fs');
const path = require('path');
const createLuciStandins = require('./standins.js');
const { Document } = require('./minidom.js');

const ROOT = path.resolve(__dirname, '..', '..');
const APP = path.join(ROOT, 'luci-app', 'luci-app-cpe-tunnel');
const RESOURCES = path.join(APP, 'htdocs', 'luci-static', 'resources');
const SAMPLES = path.join(__dirname, 'samples');

/* 'view.cpe_tunnel.status' -> its source text */
function moduleSource(name) {
	const file = path.join(RESOURCES, name.replace(/\./g, '/') + '.js');
	return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : undefined;
}

function makeEnv(opts) {
	opts = opts || {};
	const document = new Document();
	const window = { document: document };
	const env = createLuciStandins({
		document: document,
		window: window,
		sources: moduleSource,
		translate: opts.translate
	});
	env.installGlobals(globalThis);
	env.document = document;
	return env;
}

function sample(name) {
	return JSON.parse(fs.readFileSync(path.join(SAMPLES, name), 'utf8'));
}

/* UCI sections in the stand-in format from a small object:
 * { he: ['tunnel', {mode: 'http-update', ...}], ... } */
function sections(spec) {
	return Object.keys(spec).map(name => Object.assign({ '.name': name, '.type': spec[name][0] }, spec[name][1]));
}

/* the option rows of a rendered form: {sid: {option: row element}} */
function rows(node) {
	const out = {};
	for (const row of node.querySelectorAll('.cbi-value')) {
		const field = row.getAttribute('data-field').split('.');
		const sid = field[2], opt = field.slice(3).join('.');
		(out[sid] = out[sid] || {})[opt] = row;
	}
	return out;
}

/* every text node's text under node */
function texts(node, out) {
	out = out || [];
	for (const c of node.childNodes) {
		if (c.nodeType === 3) {
			if (c.data.trim())
				out.push(c.data);
		}
		else {
			texts(c, out);
		}
	}
	return out;
}

module.exports = { ROOT, APP, RESOURCES, SAMPLES, makeEnv, sample, sections, rows, texts, moduleSource };
