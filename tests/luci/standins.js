/*
 * STAND-INS for LuCI's client-side modules, so the views of luci-app-cpe-tunnel
 * can run under Node (tests/luci/views.test.js, formtool.js) and in a plain
 * Chromium page (tests/luci/page/, the screenshots) without a router.
 *
 * These are NOT LuCI. They are written from LuCI's documented client API
 * (https://openwrt.github.io/luci/jsapi/: LuCI, LuCI.baseclass, LuCI.view,
 * LuCI.form, LuCI.rpc, LuCI.uci, LuCI.poll, LuCI.ui, LuCI.dom, LuCI.network)
 * and cover the part of it the views use, with LuCI's semantics where they
 * matter to the views: module loading ('require x as y' directives, a module
 * returning a class gets instantiated), rpc.declare's params/expect/filter,
 * form options' depends (any of the depends() sets, all keys of a set),
 * validate(section_id, value) also called for empty values, rmempty/optional,
 * inactive options removed on save, readonly widgets, uci.get returning strings
 * or arrays, L.toArray splitting on whitespace, String.prototype.format.
 * Everything they are asked to do is recorded in `record` for the tests.
 *
 * Usable from Node (module.exports) and in a browser (window.createLuciStandins).
 */
(function(root, factory) {
	if (typeof module === 'object' && module.exports)
		module.exports = factory;
	else
		root.createLuciStandins = factory;
})(this, function createLuciStandins(opts) {
	'use strict';

	opts = opts || {};
	const document = opts.document;
	const window = opts.window || {};
	const sources = opts.sources || {};
	const translate = opts.translate || (s => s);

	const record = {
		translated: new Set(),
		innerHTML: [],
		requires: [],
		rpcDeclares: [],
		rpcCalls: [],
		polls: [],
		notifications: [],
		modals: [],
		uciLoads: [],
		uciChanges: [],
		uciSaves: 0,
		maps: [],
		protocols: {},
		virtualPatterns: [],
		applied: 0
	};

	/* ------------------------------------------------------------ String.format */

	function htmlEscape(s) {
		return String(s).replace(/&/g, '&#38;').replace(/"/g, '&#34;').replace(/'/g, '&#39;')
			.replace(/</g, '&#60;').replace(/>/g, '&#62;');
	}

	/* the subset of LuCI's String.prototype.format the views use; anything else
	 * throws, so a view cannot silently rely on more than is stood in for */
	function format(fmt, args) {
		let i = 0;
		return String(fmt).replace(/%(%|(\.\d+)?([a-zA-Z]))/g, (m, all, prec, conv) => {
			if (all === '%')
				return '%';
			if (i >= args.length)
				throw new Error('format: too few arguments for ' + JSON.stringify(fmt));
			const a = args[i++];
			switch (conv) {
			case 's':
				if (a == null)
					throw new Error('format: %s of ' + a + ' in ' + JSON.stringify(fmt));
				return String(a);
			case 'd':
				return String(parseInt(a) || 0);
			case 'x':
				return (parseInt(a) || 0).toString(16);
			case 'f':
				return (parseFloat(a) || 0).toFixed(prec ? +prec.substring(1) : 6);
			case 'h':
				return htmlEscape(a);
			case 'q':
				return String(a).replace(/'/g, '&#39;').replace(/"/g, '&#34;');
			default:
				throw new Error('format: %' + conv + ' is not stood in for');
			}
		});
	}

	if (!String.prototype.format || String.prototype.format.__standin !== true) {
		const f = function() { return format(this, Array.prototype.slice.call(arguments)); };
		f.__standin = true;
		Object.defineProperty(String.prototype, 'format', { value: f, configurable: true, writable: true });
	}

	/* ------------------------------------------------------------ i18n */

	function _(s, ctx) {
		if (typeof s !== 'string')
			throw new Error('_() of a non-string: ' + s);
		record.translated.add(s);
		return translate(s, ctx);
	}

	/* LuCI's own strings (luci-base translates them), kept out of record.translated */
	function own(s) {
		return translate(s);
	}

	function N_(n, s, p, ctx) {
		return (n == 1) ? _(s, ctx) : _(p, ctx);
	}

	/* ------------------------------------------------------------ dom */

	function isNode(x) {
		return x != null && typeof x === 'object' && typeof x.nodeType === 'number';
	}

	/* the stand-ins' own widgets build their markup with a lenient append
	 * (nested arrays flattened, null skipped, strings as text) */
	function append(node, children) {
		if (children == null)
			return node;
		if (Array.isArray(children)) {
			for (const c of children)
				append(node, c);
			return node;
		}
		if (isNode(children))
			node.appendChild(children);
		else
			node.appendChild(document.createTextNode(String(children)));
		return node;
	}

	/* LuCI's dom.append(), branch for branch: in an array each item is a node
	 * or becomes a text node ('' + item: a nested array or a null item turns
	 * into the text "a,b" or "null", as in LuCI); a function is called; a bare
	 * non-node value is set as innerHTML, i.e. parsed as HTML. So text from
	 * the network must be passed inside an array. This is the E() and the
	 * dom.append/content the views get. */
	function viewAppend(node, children) {
		if (Array.isArray(children)) {
			for (const c of children) {
				if (isNode(c))
					node.appendChild(c);
				else
					node.appendChild(document.createTextNode('' + c));
			}
			return node;
		}
		if (typeof children === 'function')
			return viewAppend(node, children(node));
		if (isNode(children))
			node.appendChild(children);
		else if (children !== null && children !== undefined) {
			record.innerHTML.push('' + children);
			node.innerHTML = '' + children;
		}
		return node;
	}

	function setAttrs(node, attr) {
		for (const k in attr) {
			const v = attr[k];
			if (v == null || v === false)
				continue;
			if (typeof v === 'function')
				node.addEventListener(k, v);
			else if (typeof v === 'object')
				node.setAttribute(k, JSON.stringify(v));
			else
				node.setAttribute(k, v === true ? '' : String(v));
		}
	}

	function makeE(append) {
		return function E(tag, attr, data) {
		let node;
		if (isNode(tag))
			node = tag;
		else if (Array.isArray(tag)) {
			node = document.createDocumentFragment();
			for (const t of tag)
				node.appendChild(isNode(t) ? t : E(t));
		}
		else if (typeof tag === 'string' && tag.charAt(0) !== '<')
			node = document.createElement(tag);
		else
			throw new Error('E(): HTML strings are not stood in for: ' + tag);

		if (attr != null && (typeof attr !== 'object' || Array.isArray(attr) || isNode(attr))) {
			data = attr;
			attr = null;
		}
		if (attr)
			setAttrs(node, attr);
		append(node, data);
		return node;
		};
	}

	const E = makeE(append);  /* for the stand-ins' own markup */
	const viewE = makeE(viewAppend);  /* LuCI's E(), for the views */

	const classInstances = new WeakMap();

	const dom = {
		create: E,
		append: append,
		elem: isNode,
		content(node, children) {
			while (node.firstChild)
				node.removeChild(node.firstChild);
			return append(node, children);
		},
		attr(node, key, val) {
			if (typeof key === 'object')
				setAttrs(node, key);
			else
				setAttrs(node, { [key]: val });
		},
		parent(node, selector) {
			for (let n = node; n && n.nodeType === 1; n = n.parentNode)
				if (n.matches(selector))
					return n;
			return null;
		},
		bindClassInstance(node, inst) {
			classInstances.set(node, inst);
		},
		findClassInstance(node) {
			for (let n = node; n; n = n.parentNode)
				if (classInstances.has(n))
					return classInstances.get(n);
			return null;
		},
		callClassMethod(node, method, ...args) {
			const inst = dom.findClassInstance(node);
			return inst ? inst[method](...args) : null;
		},
		isEmpty(node) {
			return !node.firstChild;
		}
	};

	/* ------------------------------------------------------------ baseclass */

	function Class() {}

	Class.extend = function(props) {
		const Parent = this;
		function Ctor() {
			if (typeof this.__init__ === 'function')
				this.__init__.apply(this, arguments);
		}
		Ctor.prototype = Object.create(Parent.prototype);
		Object.assign(Ctor.prototype, props || {});
		Object.defineProperty(Ctor.prototype, 'constructor', { value: Ctor, writable: true, configurable: true });
		Ctor.extend = Class.extend;
		Ctor.isSubclass = Class.isSubclass;
		Ctor.instantiate = Class.instantiate;
		Ctor.singleton = Class.singleton;
		Ctor.__parent__ = Parent;
		return Ctor;
	};

	Class.isSubclass = function(cls) {
		return typeof cls === 'function' && (cls === this || cls.prototype instanceof this);
	};

	Class.instantiate = function(args) {
		return new (Function.prototype.bind.apply(this, [ null ].concat(args)))();
	};

	Class.singleton = function(...args) {
		return Class.instantiate.call(this, args);
	};

	Class.prototype.varargs = function(args, offset, ...extra) {
		return Array.prototype.slice.call(args, offset).concat(extra);
	};

	Class.prototype.super = function() {
		throw new Error('stand-in baseclass: super() is not stood in for; call Parent.prototype.method.apply');
	};

	const baseclass = Class;

	/* ------------------------------------------------------------ L */

	const modules = {};
	const pending = {};

	const L = {
		env: { sessionid: '0'.repeat(32), resource: '/luci-static/resources', media: '/luci-static/bootstrap' },
		Class: Class,
		bind(fn, ctx, ...args) {
			return function(...more) { return fn.apply(ctx, args.concat(more)); };
		},
		isObject(x) {
			return x != null && typeof x === 'object' && !Array.isArray(x);
		},
		toArray(x) {
			if (x == null)
				return [];
			if (Array.isArray(x))
				return x;
			const s = String(x).trim();
			return s ? s.split(/\s+/) : [];
		},
		resolveDefault(p, def) {
			return Promise.resolve(p).catch(() => def);
		},
		resource(...parts) {
			return [ L.env.resource ].concat(parts).join('/');
		},
		url(...parts) {
			return '/cgi-bin/luci/' + parts.join('/');
		},
		media() {
			return L.env.media;
		},
		raise(type, fmt, ...args) {
			const e = new Error(format(fmt, args));
			e.name = type;
			throw e;
		},
		error(type, fmt, ...args) {
			try { L.raise(type, fmt, ...args); }
			catch (e) { throw e; }
		},
		naturalCompare(a, b) {
			return String(a).localeCompare(String(b), undefined, { numeric: true });
		},
		sortedKeys(obj) {
			return Object.keys(obj).sort(L.naturalCompare);
		},
		require(name) {
			return Promise.resolve().then(() => requireSync(name));
		},
		hasSystemFeature() {
			return false;
		}
	};

	/* ------------------------------------------------------------ uci */

	const store = {};

	const uci = {
		/* test helper: sections as [{'.name', '.type', option: value | [values]}] */
		seed(config, sections) {
			store[config] = {};
			sections.forEach((s, i) => {
				const name = s['.name'] || ('cfg' + (i + 1).toString(16).padStart(6, '0'));
				store[config][name] = Object.assign({}, s, {
					'.name': name,
					'.type': s['.type'],
					'.anonymous': !!s['.anonymous'],
					'.index': i
				});
			});
		},
		load(configs) {
			const list = L.toArray(configs);
			record.uciLoads.push(list);
			list.forEach(c => { store[c] = store[c] || {}; });
			return Promise.resolve(list);
		},
		unload() {},
		get(config, sid, opt) {
			const s = (store[config] || {})[sid];
			if (!s)
				return null;
			if (opt == null)
				return Object.assign({}, s);
			const v = s[opt];
			if (v == null)
				return null;
			return Array.isArray(v) ? v.slice() : v;
		},
		get_first(config, type, opt) {
			const s = uci.sections(config, type)[0];
			if (!s)
				return null;
			return opt == null ? s : uci.get(config, s['.name'], opt);
		},
		set(config, sid, opt, val) {
			if (val == null || val === '' || (Array.isArray(val) && !val.length))
				return uci.unset(config, sid, opt);
			const s = (store[config] || {})[sid];
			if (!s)
				return;
			const v = Array.isArray(val) ? val.map(String) : String(val);
			s[opt] = v;
			record.uciChanges.push([ 'set', config, sid, opt, v ]);
		},
		unset(config, sid, opt) {
			const s = (store[config] || {})[sid];
			if (!s || !(opt in s))
				return;
			delete s[opt];
			record.uciChanges.push([ 'unset', config, sid, opt ]);
		},
		sections(config, type, cb) {
			const list = Object.values(store[config] || {})
				.filter(s => type == null || s['.type'] === type)
				.sort((a, b) => a['.index'] - b['.index'])
				.map(s => Object.assign({}, s));
			if (typeof cb === 'function')
				list.forEach(s => cb.call(uci, s, s['.name']));
			return list;
		},
		add(config, type, name) {
			store[config] = store[config] || {};
			const sid = name || ('cfg' + (Object.keys(store[config]).length + 1).toString(16).padStart(6, '0'));
			store[config][sid] = { '.name': sid, '.type': type, '.anonymous': !name, '.index': Object.keys(store[config]).length };
			record.uciChanges.push([ 'add', config, type, sid ]);
			return sid;
		},
		remove(config, sid) {
			if (store[config] && store[config][sid]) {
				delete store[config][sid];
				record.uciChanges.push([ 'remove', config, sid ]);
			}
		},
		save() {
			record.uciSaves++;
			return Promise.resolve();
		},
		apply() {
			record.applied++;
			return Promise.resolve();
		},
		changes() {
			return Promise.resolve(record.uciChanges.slice());
		}
	};

	/* ------------------------------------------------------------ rpc */

	const replies = {};

	const rpc = {
		/* test helper: what object.method answers: a value, an Error (the call
		 * rejects, as LuCI's rpc does for JSON-RPC errors), or fn(params) */
		reply(object, method, value) {
			replies[object + '.' + method] = value;
		},
		error(code, message) {
			return new Error('RPC call failed with error ' + code + ': ' + message);
		},
		declare(options) {
			record.rpcDeclares.push({ object: options.object, method: options.method, params: options.params || [], expect: options.expect });
			return function(...args) {
				const params = {};
				(options.params || []).forEach((p, i) => { params[p] = args[i]; });
				record.rpcCalls.push({ object: options.object, method: options.method, params: params });
				const key = options.object + '.' + options.method;
				return Promise.resolve().then(() => {
					let r = replies.hasOwnProperty(key) ? replies[key]
						: rpc.error(-32000, 'Object not found');
					if (typeof r === 'function')
						r = r(params);
					return r;
				}).then(r => {
					if (r instanceof Error)
						throw r;
					/* reject: true makes a non-zero ubus status fatal */
					if (typeof r === 'number' && r !== 0 && options.reject)
						throw new Error('RPC call to ' + key + ' failed with ubus code ' + r);
					let ret = (r && typeof r === 'object') ? JSON.parse(JSON.stringify(r)) : r;
					if (options.expect) {
						for (const k in options.expect) {
							if (ret != null && k !== '')
								ret = ret[k];
							const want = options.expect[k];
							if (ret == null || Object.prototype.toString.call(ret) !== Object.prototype.toString.call(want))
								ret = want;
							break;
						}
					}
					if (typeof options.filter === 'function')
						ret = options.filter(ret, params);
					return ret;
				});
			};
		}
	};

	/* ------------------------------------------------------------ poll */

	const poll = {
		add(fn, interval) {
			if (typeof fn !== 'function')
				throw new Error('poll.add: not a function');
			record.polls.push({ fn: fn, interval: (interval == null) ? 5 : interval });
			return true;
		},
		remove(fn) {
			const n = record.polls.length;
			record.polls = record.polls.filter(p => p.fn !== fn);
			return record.polls.length < n;
		},
		start() { return true; },
		stop() { return true; },
		active() { return false; },
		/* test helper: run every polled function once */
		tick() {
			return Promise.all(record.polls.map(p => p.fn()));
		}
	};

	/* ------------------------------------------------------------ ui */

	const ui = {
		addNotification(title, children, ...classes) {
			const node = E('div', { 'class': 'alert-message ' + classes.join(' ') }, [
				title ? E('h4', {}, title) : [],
				children
			]);
			record.notifications.push({ title: title, text: node.textContent, classes: classes, node: node });
			if (document.getElementById && document.getElementById('notifications'))
				document.getElementById('notifications').appendChild(node);
			return node;
		},
		showModal(title, children, ...classes) {
			const node = E('div', { 'class': 'modal ' + classes.join(' ') }, [ E('h4', {}, title), children ]);
			record.modals.push({ title: title, text: node.textContent, node: node });
			return node;
		},
		hideModal() {
			record.modals.push({ hidden: true });
		},
		createHandlerFn(ctx, fn, ...args) {
			return function(ev) {
				const f = (typeof fn === 'string') ? ctx[fn] : fn;
				return f.apply(ctx, args.concat([ ev ]));
			};
		},
		itemlist(node, items, separators) {
			const children = [];
			for (let i = 0; i < items.length; i += 2)
				if (items[i + 1] != null)
					children.push(E('span', { 'class': 'nowrap' }, [ E('strong', {}, [ items[i], ': ' ]), items[i + 1] ]), ' ');
			return dom.content(node, children);
		},
		changes: { setIndicator() {}, renderChangeIndicator() {} }
	};

	/* ------------------------------------------------------------ form */

	const uid = { n: 0 };

	/* the state of one rendered widget (LuCI: a LuCI.ui element) */
	function Widget(node, getValue, setValue, validator, optional, itemwise) {
		this.node = node;
		this.getValue = getValue;
		this.setValue = setValue;
		this.validator = validator;
		this.optional = optional;
		this.itemwise = itemwise;
		this.error = null;
	}

	Widget.prototype.isValid = function() {
		const v = this.getValue();
		const values = this.itemwise ? v : [ v ];
		this.error = null;
		if (this.itemwise && !values.length && !this.optional)
			this.error = own('Expecting: %s').format(own('non-empty value'));
		for (const x of values) {
			const s = (x == null) ? '' : String(x);
			if (s === '' && !this.optional) {
				this.error = own('Expecting: %s').format(own('non-empty value'));
				break;
			}
			/* LuCI calls the validate function for empty values too */
			const r = this.validator ? this.validator(s) : true;
			if (r !== true) {
				this.error = String(r);
				break;
			}
		}
		const input = this.node.querySelector ? this.node.querySelector('input, select') : null;
		if (input && input.classList) {
			if (this.error) input.classList.add('cbi-input-invalid');
			else input.classList.remove('cbi-input-invalid');
		}
		return this.error == null;
	};

	const AbstractElement = Class.extend({
		__init__(title, description) {
			this.title = title || '';
			this.description = description || '';
			this.children = [];
		},
		append(obj) {
			this.children.push(obj);
		},
		titleFn(attr, ...args) {
			const v = (typeof this[attr] === 'function') ? this[attr](...args) : this[attr];
			return (v != null && v !== '') ? String(v) : null;
		},
		stripTags(s) {
			return String(s).replace(/<[^>]*>/g, '');
		}
	});

	const CBIMap = AbstractElement.extend({
		__name__: 'CBI.Map',
		__init__(config, title, description) {
			AbstractElement.prototype.__init__.call(this, title, description);
			this.config = config;
			this.parsechain = [ config ];
			this.data = uci;
			this.readonly = null;
			record.maps.push(this);
		},
		section(cls, ...args) {
			if (!AbstractSection.isSubclass(cls))
				throw new Error('Map.section: class must be a descendant of AbstractSection');
			const obj = new cls(this, ...args);
			this.append(obj);
			return obj;
		},
		chain(config) {
			if (this.parsechain.indexOf(config) < 0)
				this.parsechain.push(config);
		},
		load() {
			return uci.load(this.parsechain).then(() => Promise.all(this.children.map(s => s.load())));
		},
		parse() {
			return Promise.all(this.children.map(s => s.parse()));
		},
		save(cb, silent) {
			this.checkDepends();
			return this.parse()
				.then(cb)
				.then(() => uci.save())
				.then(() => this.load())
				.catch(e => {
					if (!silent)
						ui.showModal(own('Save error'), [ E('p', {}, [ own('An error occurred while saving the form:') ]), E('p', {}, [ String(e && e.message || e) ]) ]);
					return Promise.reject(e);
				});
		},
		reset() {
			return this.render();
		},
		render() {
			return this.load().then(() => this.renderContents());
		},
		renderContents() {
			const mapEl = E('div', { 'class': 'cbi-map', 'id': 'cbi-' + this.config }, [
				this.title ? E('h2', { 'name': 'content' }, [ this.title ]) : [],
				this.description ? E('div', { 'class': 'cbi-map-descr' }, [ this.description ]) : []
			]);
			dom.bindClassInstance(mapEl, this);
			this.root = mapEl;
			return Promise.all(this.children.map(s => s.render())).then(nodes => {
				append(mapEl, nodes);
				this.checkDepends();
				return mapEl;
			});
		},
		lookupOption(name, section_id, config_name) {
			for (const s of this.children) {
				if (section_id != null && s.cfgsections().indexOf(section_id) < 0)
					continue;
				for (const o of s.children)
					if (o.option === name)
						return [ o, section_id ];
			}
			return null;
		},
		/* show/hide option rows from their depends, as LuCI does on every change */
		checkDepends() {
			for (const s of this.children)
				for (const sid of s.cfgsections())
					for (const o of s.children) {
						const row = o._rows && o._rows[sid];
						if (!row)
							continue;
						if (o.isActive(sid)) row.classList.remove('hidden');
						else row.classList.add('hidden');
					}
		}
	});

	const AbstractSection = AbstractElement.extend({
		__name__: 'CBI.AbstractSection',
		__init__(map, sectionType, title, description) {
			AbstractElement.prototype.__init__.call(this, title, description);
			this.map = map;
			this.config = map.config;
			this.sectiontype = sectionType;
			this.optional = true;
			this.addremove = false;
			this.anonymous = false;
			this.dynamic = false;
			this.tabs = null;
			this.tab_names = null;
		},
		cfgsections() {
			throw new Error('cfgsections() not implemented');
		},
		filter(section_id) {
			return true;
		},
		load() {
			const tasks = [];
			for (const sid of this.cfgsections())
				for (const o of this.children)
					tasks.push(Promise.resolve(o.load(sid)).then(v => o.cfgvalue(sid, v)));
			return Promise.all(tasks);
		},
		parse() {
			const tasks = [];
			for (const sid of this.cfgsections())
				for (const o of this.children)
					tasks.push(o.parse(sid));
			return Promise.all(tasks);
		},
		tab(name, title, description) {
			if (this.tabs && this.tabs[name])
				throw new Error('Tab already declared');
			this.tabs = this.tabs || {};
			this.tab_names = this.tab_names || [];
			this.tab_names.push(name);
			this.tabs[name] = { name: name, title: title, description: description, children: [] };
		},
		option(cls, name, title, description) {
			if (!AbstractValue.isSubclass(cls))
				throw new Error('option: class must be a descendant of AbstractValue');
			const o = new cls(this.map, this, name, title, description);
			this.append(o);
			return o;
		},
		taboption(tab, cls, name, title, description) {
			if (!this.tabs || !this.tabs[tab])
				throw new Error('Associated tab not declared: ' + tab);
			const o = this.option(cls, name, title, description);
			o.tab = tab;
			this.tabs[tab].children.push(o);
			return o;
		},
		getOption(option) {
			for (const o of this.children)
				if (o.option === option)
					return o;
			return null;
		},
		formvalue(section_id, option) {
			const rv = {};
			for (const o of this.children) {
				if (typeof option === 'string' && o.option !== option)
					continue;
				rv[o.option] = o.formvalue(section_id);
			}
			return (typeof option === 'string') ? rv[option] : rv;
		},
		getUIElement(section_id, option) {
			const o = this.getOption(option);
			return o ? o.getUIElement(section_id) : null;
		},
		renderOptions(tab, section_id) {
			const list = this.children.filter(o => tab == null || o.tab === tab);
			return Promise.all(list.map((o, i) => Promise.resolve(o.render(i, section_id, false))));
		},
		renderUCISection(section_id) {
			if (!this.tab_names)
				return this.renderOptions(null, section_id).then(nodes => E('div', { 'class': 'cbi-section-node', 'data-section-id': section_id }, nodes));
			const menu = E('ul', { 'class': 'cbi-tabmenu' });
			const node = E('div', { 'class': 'cbi-section-node cbi-section-node-tabbed', 'data-section-id': section_id }, [ menu ]);
			return Promise.all(this.tab_names.map(t => this.renderOptions(t, section_id))).then(lists => {
				this.tab_names.forEach((t, i) => {
					const active = (i === 0);
					const container = E('div', {
						'class': 'cbi-tabcontainer' + (active ? '' : ' hidden'),
						'data-tab': t,
						'data-tab-title': this.tabs[t].title,
						'data-tab-active': active ? 'true' : null
					}, [
						this.tabs[t].description ? E('div', { 'class': 'cbi-tab-descr' }, [ this.tabs[t].description ]) : [],
						lists[i]
					]);
					const li = E('li', { 'class': active ? 'cbi-tab' : 'cbi-tab-disabled', 'data-tab': t }, [
						E('a', { 'href': '#', 'click': ev => {
							for (const l of menu.querySelectorAll('li'))
								l.className = (l === li) ? 'cbi-tab' : 'cbi-tab-disabled';
							for (const c of node.querySelectorAll('.cbi-tabcontainer'))
								c.classList.toggle('hidden', c !== container);
							if (ev && ev.preventDefault) ev.preventDefault();
						} }, [ this.tabs[t].title ])
					]);
					menu.appendChild(li);
					node.appendChild(container);
				});
				return node;
			});
		},
		renderSectionAdd() {
			if (!this.addremove)
				return E([]);
			return E('div', { 'class': 'cbi-section-create' }, [
				this.anonymous ? [] : E('input', { 'type': 'text', 'class': 'cbi-section-create-name' }),
				E('button', { 'class': 'cbi-button cbi-button-add', 'click': ev => this.handleAdd(ev) }, [ this.addbtntitle || own('Add') ])
			]);
		},
		handleAdd(ev, name) {
			uci.add(this.uciconfig || this.map.config, this.sectiontype, name);
			return this.map.save(null, true);
		},
		handleRemove(section_id) {
			uci.remove(this.uciconfig || this.map.config, section_id);
			return this.map.save(null, true);
		},
		render() {
			const sids = this.cfgsections();
			return Promise.all(sids.map(sid => this.renderUCISection(sid))).then(nodes => {
				const el = E('div', { 'class': 'cbi-section', 'id': 'cbi-' + this.map.config + '-' + this.sectiontype }, [
					this.title ? E('h3', {}, [ this.title ]) : [],
					this.description ? E('div', { 'class': 'cbi-section-descr' }, [ this.description ]) : []
				]);
				nodes.forEach((n, i) => {
					if (this.addremove)
						el.appendChild(E('div', { 'class': 'cbi-section-remove right' }, [
							E('button', { 'class': 'cbi-button', 'click': () => this.handleRemove(sids[i]) }, [ own('Delete') ])
						]));
					if (!this.anonymous)
						el.appendChild(E('h4', { 'class': 'cbi-section-name' }, [ sids[i] ]));
					el.appendChild(n);
				});
				if (!nodes.length)
					el.appendChild(E('em', {}, [ own('This section contains no values yet') ]));
				el.appendChild(this.renderSectionAdd());
				dom.bindClassInstance(el, this);
				return el;
			});
		}
	});

	const TypedSection = AbstractSection.extend({
		__name__: 'CBI.TypedSection',
		cfgsections() {
			return uci.sections(this.uciconfig || this.map.config, this.sectiontype)
				.map(s => s['.name'])
				.filter(sid => this.filter(sid));
		}
	});

	const TableSection = TypedSection.extend({ __name__: 'CBI.TableSection' });
	const GridSection = TableSection.extend({ __name__: 'CBI.GridSection' });

	const NamedSection = AbstractSection.extend({
		__name__: 'CBI.NamedSection',
		__init__(map, section_id, sectionType, title, description) {
			AbstractSection.prototype.__init__.call(this, map, sectionType, title, description);
			this.section = section_id;
		},
		cfgsections() {
			const s = uci.get(this.uciconfig || this.map.config, this.section);
			return (s && s['.type'] === this.sectiontype) ? [ this.section ] : [];
		},
		renderSectionAdd() {
			if (!this.addremove || this.cfgsections().length)
				return E([]);
			return E('div', { 'class': 'cbi-section-create' }, [
				E('button', { 'class': 'cbi-button cbi-button-add', 'click': ev => this.handleAdd(ev, this.section) }, [ own('Add') ])
			]);
		}
	});

	const AbstractValue = AbstractElement.extend({
		__name__: 'CBI.AbstractValue',
		__init__(map, section, option, title, description) {
			AbstractElement.prototype.__init__.call(this, title, description);
			this.map = map;
			this.section = section;
			this.option = option;
			this.deps = [];
			this.rmempty = true;
			this.default = null;
			this.optional = false;
			this.retain = false;
			this.readonly = null;
			this.data = {};
			this._widgets = {};
			this._rows = {};
		},
		depends(field, value) {
			let deps;
			if (typeof field === 'string') {
				deps = {};
				deps[field] = value;
			}
			else {
				deps = field;
			}
			this.deps.push(deps);
		},
		cbid(section_id) {
			return 'cbid.' + (this.uciconfig || this.section.uciconfig || this.map.config) + '.' + section_id + '.' + this.option;
		},
		load(section_id) {
			return uci.get(this.uciconfig || this.section.uciconfig || this.map.config,
				this.ucisection || section_id, this.ucioption || this.option);
		},
		cfgvalue(section_id, set_value) {
			if (section_id == null)
				throw new Error('cfgvalue: section_id is required');
			if (arguments.length === 2)
				this.data[section_id] = set_value;
			return this.data[section_id];
		},
		getUIElement(section_id) {
			return this._widgets[section_id] || null;
		},
		formvalue(section_id) {
			const w = this._widgets[section_id];
			return w ? w.getValue() : null;
		},
		textvalue(section_id) {
			let v = this.cfgvalue(section_id);
			if (v == null)
				v = this.default;
			return Array.isArray(v) ? v.join(' ') : (v == null ? '' : String(v));
		},
		validate(section_id, value) {
			return true;
		},
		isValid(section_id) {
			const w = this._widgets[section_id];
			return w ? w.isValid() : true;
		},
		getValidationError(section_id) {
			const w = this._widgets[section_id];
			return (w && !w.isValid()) ? w.error : '';
		},
		/* any depends() set whose every key matches (LuCI's semantics); an option
		 * depended on counts only while it is active itself */
		isActive(section_id) {
			if (!this.deps.length)
				return true;
			return this.deps.some(set => Object.keys(set).every(key => {
				if (key.charAt(0) === '!')
					return true;
				const res = this.map.lookupOption(key, section_id);
				const val = (res && res[0].isActive(res[1])) ? res[0].formvalue(res[1]) : null;
				const want = set[key];
				if (want instanceof RegExp)
					return want.test(val == null ? '' : String(val));
				return val != null && String(val) === String(want);
			}));
		},
		parse(section_id) {
			const active = this.isActive(section_id),
			      cval = this.cfgvalue(section_id),
			      fval = active ? this.formvalue(section_id) : null;

			if (active && !this.isValid(section_id)) {
				const e = new TypeError(this.option + ': ' + this.getValidationError(section_id));
				e.option = this.option;
				e.section_id = section_id;
				return Promise.reject(e);
			}
			const empty = fval == null || fval === '' || (Array.isArray(fval) && !fval.length);
			if (!empty) {
				if (this.forcewrite || JSON.stringify(cval) !== JSON.stringify(fval))
					return Promise.resolve(this.write(section_id, fval));
			}
			else if (!active || this.rmempty || this.optional) {
				return Promise.resolve(this.remove(section_id));
			}
			else if (JSON.stringify(cval) !== JSON.stringify(fval)) {
				return Promise.reject(new TypeError(this.option + ': required'));
			}
			return Promise.resolve();
		},
		write(section_id, formvalue) {
			return uci.set(this.uciconfig || this.section.uciconfig || this.map.config,
				this.ucisection || section_id, this.ucioption || this.option, formvalue);
		},
		remove(section_id) {
			return uci.unset(this.uciconfig || this.section.uciconfig || this.map.config,
				this.ucisection || section_id, this.ucioption || this.option);
		},
		isReadonly() {
			return (this.readonly != null) ? !!this.readonly : !!this.map.readonly;
		},
		render(option_index, section_id, in_table) {
			let cfgvalue = this.cfgvalue(section_id);
			if (cfgvalue == null)
				cfgvalue = this.default;
			return Promise.resolve(this.renderWidget(section_id, option_index, cfgvalue)).then(widget => {
				const row = E('div', {
					'class': 'cbi-value',
					'id': 'cbi-' + this.map.config + '-' + section_id + '-' + this.option,
					'data-name': this.option,
					'data-widget': this.__name__,
					'data-field': this.cbid(section_id)
				}, [
					E('label', { 'class': 'cbi-value-title', 'for': 'widget.' + this.cbid(section_id) }, [ this.title || '' ]),
					E('div', { 'class': 'cbi-value-field' }, [
						widget,
						this.description ? E('div', { 'class': 'cbi-value-description' }, [ this.description ]) : []
					])
				]);
				this._rows[section_id] = row;
				dom.bindClassInstance(row, this);
				return row;
			});
		},
		_validator(section_id) {
			return value => this.validate(section_id, value);
		}
	});

	const Value = AbstractValue.extend({
		__name__: 'CBI.Value',
		__init__(...args) {
			AbstractValue.prototype.__init__.apply(this, args);
			this.keylist = [];
			this.vallist = [];
		},
		value(key, val) {
			this.keylist.push(String(key));
			this.vallist.push(val != null ? val : key);
		},
		renderWidget(section_id, option_index, cfgvalue) {
			const v = (cfgvalue == null) ? '' : (Array.isArray(cfgvalue) ? cfgvalue.join(' ') : String(cfgvalue));
			const input = E('input', {
				'id': 'widget.' + this.cbid(section_id),
				'type': this.password ? 'password' : 'text',
				'class': this.password ? 'cbi-input-password' : 'cbi-input-text',
				'placeholder': this.placeholder,
				'value': v,
				'disabled': this.isReadonly() ? true : null
			});
			const node = E('div', { 'id': this.cbid(section_id), 'class': 'cbi-input-wrap' }, [
				input,
				this.password ? E('button', { 'class': 'cbi-button cbi-button-neutral', 'title': own('Reveal/hide password'), 'aria-label': own('Reveal/hide password') }, [ '∗' ]) : []
			]);
			this._widgets[section_id] = new Widget(node, () => input.value, x => { input.value = x; },
				this._validator(section_id), this.optional || this.rmempty, false);
			return node;
		}
	});

	const ListValue = Value.extend({
		__name__: 'CBI.ListValue',
		renderWidget(section_id, option_index, cfgvalue) {
			const cur = (cfgvalue == null) ? null : String(cfgvalue);
			const select = E('select', {
				'id': 'widget.' + this.cbid(section_id),
				'class': 'cbi-input-select',
				'disabled': this.isReadonly() ? true : null
			}, this.keylist.map((k, i) => E('option', { 'value': k, 'selected': (k === cur) ? true : null }, [ String(this.vallist[i]) ])));
			if (cur != null && this.keylist.indexOf(cur) < 0)
				select.appendChild(E('option', { 'value': cur, 'selected': true }, [ cur ]));
			select.addEventListener('change', () => this.map.checkDepends());
			const node = E('div', { 'id': this.cbid(section_id) }, [ select ]);
			this._widgets[section_id] = new Widget(node, () => select.value, x => { select.value = x; },
				this._validator(section_id), this.optional || this.rmempty, false);
			return node;
		}
	});

	const RichListValue = ListValue.extend({ __name__: 'CBI.RichListValue' });

	const Flag = Value.extend({
		__name__: 'CBI.Flag',
		__init__(...args) {
			Value.prototype.__init__.apply(this, args);
			this.enabled = '1';
			this.disabled = '0';
		},
		renderWidget(section_id, option_index, cfgvalue) {
			const input = E('input', {
				'id': 'widget.' + this.cbid(section_id),
				'type': 'checkbox',
				'checked': (String(cfgvalue) === String(this.enabled)) ? true : null,
				'disabled': this.isReadonly() ? true : null
			});
			input.addEventListener('change', () => this.map.checkDepends());
			const node = E('div', { 'id': this.cbid(section_id), 'class': 'cbi-checkbox' }, [ input, E('label', { 'for': 'widget.' + this.cbid(section_id) }) ]);
			this._widgets[section_id] = new Widget(node, () => input.checked ? this.enabled : this.disabled,
				x => { input.checked = (String(x) === String(this.enabled)); },
				this._validator(section_id), true, false);
			return node;
		},
		textvalue(section_id) {
			let v = this.cfgvalue(section_id);
			if (v == null) v = this.default;
			return (String(v) === String(this.enabled)) ? own('Yes') : own('No');
		}
	});

	const DynamicList = Value.extend({
		__name__: 'CBI.DynamicList',
		renderWidget(section_id, option_index, cfgvalue) {
			let items = L.toArray(cfgvalue).map(String);
			const list = E('div', { 'class': 'cbi-dynlist', 'id': this.cbid(section_id) });
			const disabled = this.isReadonly();
			const draw = () => {
				dom.content(list, items.map((v, i) => E('div', { 'class': 'item', 'data-value': v }, [
					E('span', {}, [ v ]),
					disabled ? [] : E('span', { 'class': 'remove', 'click': () => { items.splice(i, 1); draw(); } }, [ '×' ])
				])));
				if (!disabled) {
					const input = E('input', { 'type': 'text', 'class': 'cbi-input-text', 'placeholder': this.placeholder });
					list.appendChild(E('div', { 'class': 'add-item' }, [
						input,
						E('div', { 'class': 'btn cbi-button cbi-button-add', 'click': () => {
							if (input.value !== '') { items.push(input.value); draw(); }
						} }, [ '+' ])
					]));
				}
			};
			draw();
			this._widgets[section_id] = new Widget(list, () => items.slice(), x => { items = L.toArray(x).map(String); draw(); },
				this._validator(section_id), this.optional || this.rmempty, true);
			return list;
		}
	});

	const DummyValue = AbstractValue.extend({
		__name__: 'CBI.DummyValue',
		renderWidget(section_id, option_index, cfgvalue) {
			const node = E('div', { 'id': this.cbid(section_id), 'class': 'cbi-dummy' }, [ this.textvalue(section_id) ]);
			this._widgets[section_id] = new Widget(node, () => null, () => {}, null, true, false);
			return node;
		},
		write() {},
		remove() {}
	});

	const Button = Value.extend({
		__name__: 'CBI.Button',
		renderWidget(section_id) {
			const node = E('button', { 'class': 'cbi-button cbi-button-' + (this.inputstyle || 'button'),
				'click': ev => this.onclick && this.onclick(ev, section_id) }, [ this.inputtitle || this.title ]);
			this._widgets[section_id] = new Widget(node, () => null, () => {}, null, true, false);
			return node;
		},
		write() {},
		remove() {}
	});

	const form = {
		Map: CBIMap,
		JSONMap: CBIMap,
		AbstractElement: AbstractElement,
		AbstractSection: AbstractSection,
		TypedSection: TypedSection,
		TableSection: TableSection,
		GridSection: GridSection,
		NamedSection: NamedSection,
		AbstractValue: AbstractValue,
		Value: Value,
		ListValue: ListValue,
		RichListValue: RichListValue,
		Flag: Flag,
		DynamicList: DynamicList,
		DummyValue: DummyValue,
		Button: Button
	};

	/* ------------------------------------------------------------ view */

	const view = Class.extend({
		__name__: 'LuCI.view',
		/* LuCI's view loads and renders itself into #view on construction; here
		 * the harness does it (runView), so a test can step through it */
		__init__() {},
		load() {
			return Promise.resolve();
		},
		render() {
			return null;
		},
		handleSave(ev) {
			const maps = this.__node ? Array.from(this.__node.querySelectorAll('.cbi-map')) : [];
			return Promise.all(maps.map(m => dom.callClassMethod(m, 'save')));
		},
		handleSaveApply(ev, mode) {
			return this.handleSave(ev).then(() => uci.apply());
		},
		handleReset(ev) {
			const maps = this.__node ? Array.from(this.__node.querySelectorAll('.cbi-map')) : [];
			return Promise.all(maps.map(m => dom.callClassMethod(m, 'reset')));
		},
		addFooter() {
			const buttons = [];
			if (this.handleSaveApply)
				buttons.push(E('button', { 'class': 'cbi-button cbi-button-apply' }, [ own('Save & Apply') ]));
			if (this.handleSave)
				buttons.push(E('button', { 'class': 'cbi-button cbi-button-save' }, [ own('Save') ]));
			if (this.handleReset)
				buttons.push(E('button', { 'class': 'cbi-button cbi-button-reset' }, [ own('Reset') ]));
			return buttons.length ? E('div', { 'class': 'cbi-page-actions' }, buttons) : E([]);
		}
	});

	/* ------------------------------------------------------------ network */

	const Protocol = Class.extend({
		__init__(name) {
			this.sid = name;
		},
		_ubus(field) {
			const st = (network.__ubus || {})[this.sid] || {};
			return (field == null) ? st : (st[field] != null ? st[field] : null);
		},
		get(opt) {
			return uci.get('network', this.sid, opt);
		},
		getName() {
			return this.sid;
		}
	});

	const network = {
		__ubus: {},
		registerProtocol(name, methods) {
			const cls = Protocol.extend(Object.assign({ __name__: 'Protocol.' + name, getProtocol() { return name; } }, methods));
			record.protocols[name] = cls;
			return cls;
		},
		registerPatternVirtual(re) {
			record.virtualPatterns.push(re);
		},
		getIfnameOf(obj) {
			if (typeof obj === 'string')
				return obj;
			return (obj && typeof obj.getIfname === 'function') ? obj.getIfname() : null;
		},
		getNetworks() {
			return Promise.resolve(uci.sections('network', 'interface').map(s => new Protocol(s['.name'])));
		},
		getWANNetworks() {
			return Promise.resolve([]);
		}
	};

	/* tools.widgets: only NetworkSelect, as a list of the network interfaces */
	const NetworkSelect = ListValue.extend({
		__name__: 'CBI.NetworkSelect',
		renderWidget(section_id, option_index, cfgvalue) {
			this.keylist = [ '' ];
			this.vallist = [ own('unspecified') ];
			for (const s of uci.sections('network', 'interface'))
				if (s['.name'] !== this.exclude) {
					this.keylist.push(s['.name']);
					this.vallist.push(s['.name']);
				}
			return ListValue.prototype.renderWidget.call(this, section_id, option_index, cfgvalue);
		}
	});

	const widgets = { NetworkSelect: NetworkSelect, DeviceSelect: Value.extend({ __name__: 'CBI.DeviceSelect' }) };

	/* ------------------------------------------------------------ loader */

	const standins = {
		baseclass: baseclass,
		view: view,
		form: form,
		rpc: rpc,
		uci: uci,
		poll: poll,
		ui: ui,
		dom: Object.assign({}, dom, {
			create: viewE,
			append: viewAppend,
			content(node, children) {
				while (node.firstChild)
					node.removeChild(node.firstChild);
				return viewAppend(node, children);
			}
		}),
		network: network,
		'tools.widgets': widgets
	};

	/* the leading directives of a LuCI module: 'use strict'; 'require x [as y]'; */
	function directives(text) {
		const out = [];
		const re = /^(?:\s+|\/\/[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/|(['"])((?:use|require)\s[^'"\n]*)\1\s*;?)/;
		let off = 0, m;
		while ((m = re.exec(text.substring(off))) && m[0].length) {
			if (m[2])
				out.push(m[2].trim());
			off += m[0].length;
		}
		return out;
	}

	function compile(name, text) {
		const argNames = [], argValues = [];
		for (const d of directives(text)) {
			const m = /^require\s+(\S+)(?:\s+as\s+([a-zA-Z_]\S*))?$/.exec(d);
			if (!m)
				continue;
			argNames.push(m[2] || m[1].replace(/[^a-zA-Z0-9_]/g, '_'));
			argValues.push(requireSync(m[1]));
		}
		const fn = new Function('window', 'document', 'L', ...argNames, text + '\n//# sourceURL=' + name + '.js');
		const result = fn.call(window, window, document, L, ...argValues);
		/* as LuCI: a module returning a class is instantiated once */
		if (typeof result === 'function' && result.prototype instanceof Class)
			return new result();
		return result;
	}

	function requireSync(name) {
		record.requires.push(name);
		if (standins.hasOwnProperty(name))
			return standins[name];
		if (modules.hasOwnProperty(name))
			return modules[name];
		if (pending[name])
			throw new Error('require: dependency cycle at ' + name);
		const text = (typeof sources === 'function') ? sources(name) : sources[name];
		if (typeof text !== 'string')
			throw new Error('require: no source for module ' + name);
		pending[name] = true;
		try {
			modules[name] = compile(name, text);
		}
		finally {
			delete pending[name];
		}
		return modules[name];
	}

	/* load + render a view module ('view.cpe_tunnel.status') into container */
	function runView(name, container) {
		const inst = requireSync(name);
		return Promise.resolve(inst.load()).then(data => inst.render(data)).then(node => {
			inst.__node = E('div', { 'id': 'view' }, [ node ]);
			if (container)
				container.appendChild(inst.__node);
			return { view: inst, node: inst.__node };
		});
	}

	return {
		L: L, E: viewE, _: _, N_: N_, format: format,
		baseclass: baseclass, view: view, form: form, rpc: rpc, uci: uci, poll: poll, ui: ui,
		dom: dom, network: network, widgets: widgets,
		record: record,
		require: requireSync,
		runView: runView,
		directives: directives,
		/* set the globals LuCI defines (E, _, N_, L) on a global object */
		installGlobals(g) {
			g.L = L; g.E = viewE; g._ = _; g.N_ = N_;
		}
	};
});
