'use strict';
/*
 * What the LuCI forms of luci-app-cpe-tunnel are, for tests/unit/test_luci.py,
 * built with the stand-ins (tests/luci/standins.js).
 *
 *   node tests/luci/formtool.js describe
 *       JSON: the configuration form (view cpe_tunnel/config) and the protocol
 *       form (protocol cpetunnel): sections, tabs, and per option its widget,
 *       depends, rmempty, password, placeholder, default, choices, whether it
 *       is lock-guarded and has a validator; also the rpc.declare calls and
 *       poll.add calls of the status view, and the module requires; the
 *       option table common.OPTIONS / common.NETIFD (generated from the schema)
 *       and which options common.fields() has words for.
 *
 *   node tests/luci/formtool.js serve
 *       One JSON request per line on stdin, one JSON answer per line on stdout:
 *       {"check": ["tunnel", "mtu"], "value": "1280"}
 *           common.check() for that option's table entry -> {"result": true|"message"}
 *       {"form": "config"|"protocol", "section": "tunnel"|"lan"|"globals",
 *        "option": "mtu", "value": "1280", "values": {"mode": "tsp", ...}}
 *           the form option's validate(section_id, value) with the section's
 *           other widgets set to `values` (unset ones empty / default)
 *       {"form": ..., "section": ..., "values": {...}, "all": true}
 *           every active option's widget validity -> {"invalid": {option: message}}
 */

const fs = require('fs');
const readline = require('readline');
const { makeEnv, sections, sample, SAMPLES } = require('./harness.js');

const SIDS = { tunnel: 'he', lan: 'lan1', globals: 'main', interface: 'wan6' };

function seedConfig(env) {
	env.uci.seed('cpe_tunnel', sections({
		main: [ 'globals', {} ],
		he: [ 'tunnel', { mode: 'http-update' } ],
		lan1: [ 'lan', { interface: 'br-lan' } ]
	}));
	env.uci.seed('network', sections({
		lan: [ 'interface', { proto: 'static' } ],
		wan: [ 'interface', { proto: 'dhcp' } ],
		wan6: [ 'interface', { proto: 'cpetunnel', mode: 'http-update' } ]
	}));
}

/* the config view's Map, rendered */
function buildConfig(env) {
	const v = env.require('view.cpe_tunnel.config');
	const p = v.render();
	const map = env.record.maps[env.record.maps.length - 1];
	return Promise.resolve(p).then(node => ({ map: map, node: node }));
}

/* the protocol plugin's options in an interface section, as LuCI's interface
 * dialog offers them: a NamedSection of config network with tabs general and
 * advanced, renderFormOptions(s), rendered */
function buildProtocol(env) {
	env.require('protocol.cpetunnel');
	const cls = env.record.protocols.cpetunnel;
	const proto = new cls('wan6');
	const map = new env.form.Map('network');
	const s = map.section(env.form.NamedSection, 'wan6', 'interface');
	s.tab('general', 'General Settings');
	s.tab('advanced', 'Advanced Settings');
	proto.renderFormOptions(s);
	return map.render().then(node => ({ map: map, node: node, proto: proto }));
}

function describeOption(o) {
	return {
		name: o.option,
		widget: o.__name__,
		tab: o.tab || null,
		title: o.title || null,
		description: o.description || null,
		depends: o.deps,
		rmempty: o.rmempty,
		optional: o.optional,
		password: !!o.password,
		placeholder: (o.placeholder != null) ? String(o.placeholder) : null,
		default: (o.default != null) ? String(o.default) : null,
		choices: o.keylist ? o.keylist.slice() : null,
		labels: o.vallist ? o.vallist.map(String) : null,
		enabled: (o.enabled != null) ? String(o.enabled) : null,
		disabled: (o.disabled != null) ? String(o.disabled) : null,
		validates: Object.prototype.hasOwnProperty.call(o, 'validate'),
		lockable: !!o.cpeLockable,
		/* DummyValue and Button write nothing to the configuration */
		writes: [ 'CBI.DummyValue', 'CBI.Button' ].indexOf(o.__name__) < 0,
		kind: o.cpeKind || null
	};
}

function describeMap(map) {
	return map.children.map(s => ({
		type: s.sectiontype,
		class: s.__name__,
		name: s.section || null,
		anonymous: !!s.anonymous,
		addremove: !!s.addremove,
		title: s.title || null,
		tabs: s.tab_names ? s.tab_names.map(t => ({ name: t, title: s.tabs[t].title })) : null,
		options: s.children.map(describeOption)
	}));
}

function describe() {
	const out = {};
	const seen = new Set();
	let env = makeEnv();
	seedConfig(env);
	return buildConfig(env).then(cfg => {
		out.config = describeMap(cfg.map);
		/* the generated option table and the hand-written words (fields()) */
		const common = env.require('cpe_tunnel.common');
		out.options = common.OPTIONS;
		out.netifd = common.NETIFD;
		const words = common.fields();
		out.words = {};
		for (const type of Object.keys(words))
			out.words[type] = words[type].map(r => ({ name: r.name, field: r.field !== false, title: r.title || null }));
		translated(env);
		env = makeEnv();
		seedConfig(env);
		return buildProtocol(env);
	}).then(pr => {
		out.protocol = {
			name: pr.proto.getProtocol(),
			i18n: pr.proto.getI18n(),
			ifname: pr.proto.getIfname(),
			package: pr.proto.getOpkgPackage(),
			virtual: pr.proto.isVirtual(),
			floating: pr.proto.isFloating(),
			patterns: env.record.virtualPatterns.map(String),
			sections: describeMap(pr.map)
		};
		translated(env);
		env = makeEnv();
		env.rpc.reply('cpe_tunnel', 'status', {});
		return env.runView('view.cpe_tunnel.status').then(() => {
			out.status = {
				declares: env.record.rpcDeclares,
				polls: env.record.polls.map(p => ({ interval: p.interval })),
				calls: env.record.rpcCalls
			};
			translated(env);
			return statusStrings();
		}).then(() => {
			out.translated = Array.from(seen).sort();
			return out;
		});
	});

	/* the strings the views passed through _() while rendering every sample */
	function translated(e) {
		for (const s of e.record.translated)
			seen.add(s);
	}

	function statusStrings() {
		const samples = fs.readdirSync(SAMPLES).filter(f => f.endsWith('.json'));
		return samples.reduce((p, name) => p.then(() => {
			const e = makeEnv();
			e.rpc.reply('cpe_tunnel', 'status', sample(name));
			e.rpc.reply('cpe_tunnel', 'reconnect', name.indexOf('down') >= 0 ? e.rpc.error(-32002, 'Access denied') : { message: 'reconnecting' });
			return e.runView('view.cpe_tunnel.status').then(r => {
				const b = r.node.querySelectorAll('button').find(x => x.textContent === 'Reconnect');
				return Promise.all(b.click());
			}).then(() => translated(e));
		}), Promise.resolve()).then(() => {
			const e = makeEnv();
			return e.runView('view.cpe_tunnel.status').then(() => translated(e));
		});
	}
}

/* ---- serve ---- */

function resetSection(s, sid, values) {
	for (const o of s.children) {
		const w = o.getUIElement(sid);
		if (!w)
			continue;
		let v;
		if (Object.prototype.hasOwnProperty.call(values, o.option))
			v = values[o.option];
		else if (o.__name__ === 'CBI.Flag' || o.__name__ === 'CBI.ListValue')
			v = (o.default != null) ? o.default : (o.keylist && o.keylist[0]) || '';
		else if (o.__name__ === 'CBI.DynamicList')
			v = [];
		else
			v = '';
		w.setValue(v);
	}
}

function findSection(map, type) {
	for (const s of map.children)
		if (s.sectiontype === type)
			return s;
	throw new Error('no section of type ' + type);
}

function serve() {
	const forms = {};
	const envs = {};
	const ready = (function() {
		envs.config = makeEnv();
		seedConfig(envs.config);
		return buildConfig(envs.config).then(cfg => {
			forms.config = cfg.map;
			envs.protocol = makeEnv();
			seedConfig(envs.protocol);
			return buildProtocol(envs.protocol);
		}).then(pr => {
			forms.protocol = pr.map;
		});
	})();

	const common = () => envs.config.require('cpe_tunnel.common');

	function answer(req) {
		if (req.check) {
			const sp = common().spec(req.check[0], req.check[1]);
			if (!sp)
				return { error: 'no option ' + req.check.join('.') };
			return { result: common().check(sp, req.value) };
		}
		const envName = req.form || 'config';
		envs[envName].installGlobals(globalThis);
		const map = forms[envName];
		const s = findSection(map, req.section === 'tunnel' && envName === 'protocol' ? 'interface' : req.section);
		const sid = SIDS[s.sectiontype];
		resetSection(s, sid, req.values || {});
		if (req.all) {
			const invalid = {};
			for (const o of s.children)
				if (o.isActive(sid) && !o.isValid(sid))
					invalid[o.option] = o.getValidationError(sid);
			return { invalid: invalid };
		}
		const o = s.getOption(req.option);
		if (!o)
			return { error: 'no option ' + req.option + ' in the ' + envName + ' form' };
		if (!Object.prototype.hasOwnProperty.call(o, 'validate'))
			return { error: 'option ' + req.option + ' has no validator' };
		return { result: o.validate(sid, req.value), active: o.isActive(sid) };
	}

	const rl = readline.createInterface({ input: process.stdin, terminal: false });
	let chain = ready;
	rl.on('line', line => {
		chain = chain.then(() => {
			let out;
			try {
				out = answer(JSON.parse(line));
			}
			catch (e) {
				out = { error: String(e && e.stack || e) };
			}
			process.stdout.write(JSON.stringify(out) + '\n');
		});
	});
	rl.on('close', () => chain.then(() => process.exit(0)));
}

const cmd = process.argv[2];
if (cmd === 'describe') {
	describe().then(out => {
		process.stdout.write(JSON.stringify(out, null, 1) + '\n');
	}).catch(e => {
		process.stderr.write(String(e && e.stack || e) + '\n');
		process.exit(1);
	});
}
else if (cmd === 'serve') {
	serve();
}
else {
	process.stderr.write('usage: node formtool.js describe|serve\n');
	process.exit(2);
}
