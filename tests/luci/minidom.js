'use strict';
/*
 * A minimal DOM for running LuCI views under Node: elements, text nodes,
 * fragments, attributes, classList, events (addEventListener / dispatchEvent /
 * click()), textContent, and querySelector(All) for simple selectors (tag, #id,
 * .class, [attr], [attr=value], descendant combinator, comma lists).
 * Not a browser: no layout; innerHTML is a small parser (tags, attributes, entities). In Chromium the real DOM is
 * used instead (tests/luci/page/).
 */

class Node {
	constructor(ownerDocument) {
		this.ownerDocument = ownerDocument;
		this.parentNode = null;
		this.childNodes = [];
	}

	get firstChild() { return this.childNodes[0] || null; }
	get lastChild() { return this.childNodes[this.childNodes.length - 1] || null; }

	get nextSibling() {
		if (!this.parentNode)
			return null;
		const s = this.parentNode.childNodes;
		return s[s.indexOf(this) + 1] || null;
	}

	get children() { return this.childNodes.filter(n => n.nodeType === 1); }
	get firstElementChild() { return this.children[0] || null; }
	get lastElementChild() { const c = this.children; return c[c.length - 1] || null; }

	appendChild(node) {
		if (node.nodeType === 11) {
			for (const c of node.childNodes.slice())
				this.appendChild(c);
			return node;
		}
		if (node.parentNode)
			node.parentNode.removeChild(node);
		node.parentNode = this;
		this.childNodes.push(node);
		return node;
	}

	insertBefore(node, ref) {
		if (ref == null)
			return this.appendChild(node);
		if (node.nodeType === 11) {
			for (const c of node.childNodes.slice())
				this.insertBefore(c, ref);
			return node;
		}
		if (node.parentNode)
			node.parentNode.removeChild(node);
		const i = this.childNodes.indexOf(ref);
		if (i < 0)
			throw new Error('insertBefore: reference node is not a child');
		node.parentNode = this;
		this.childNodes.splice(i, 0, node);
		return node;
	}

	removeChild(node) {
		const i = this.childNodes.indexOf(node);
		if (i < 0)
			throw new Error('removeChild: not a child');
		this.childNodes.splice(i, 1);
		node.parentNode = null;
		return node;
	}

	replaceChild(node, old) {
		this.insertBefore(node, old);
		return this.removeChild(old);
	}

	remove() {
		if (this.parentNode)
			this.parentNode.removeChild(this);
	}

	get textContent() {
		return this.childNodes.map(n => n.textContent).join('');
	}

	set textContent(v) {
		for (const c of this.childNodes)
			c.parentNode = null;
		this.childNodes = [];
		if (v != null && v !== '')
			this.appendChild(this.ownerDocument.createTextNode(String(v)));
	}

	contains(node) {
		for (let n = node; n; n = n.parentNode)
			if (n === this)
				return true;
		return false;
	}

	/* every element below this node, document order */
	_descendants(out) {
		for (const c of this.childNodes) {
			if (c.nodeType === 1) {
				out.push(c);
				c._descendants(out);
			}
			else if (c.nodeType === 11) {
				c._descendants(out);
			}
		}
		return out;
	}

	querySelectorAll(selector) {
		const groups = parseSelector(selector);
		return this._descendants([]).filter(el => groups.some(g => matchChain(el, g, null)));
	}

	querySelector(selector) {
		return this.querySelectorAll(selector)[0] || null;
	}
}

class Text extends Node {
	constructor(doc, data) {
		super(doc);
		this.nodeType = 3;
		this.nodeName = '#text';
		this.data = String(data);
	}

	get textContent() { return this.data; }
	set textContent(v) { this.data = String(v); }
	get nodeValue() { return this.data; }
}

class DocumentFragment extends Node {
	constructor(doc) {
		super(doc);
		this.nodeType = 11;
		this.nodeName = '#document-fragment';
	}
}

class ClassList {
	constructor(el) { this.el = el; }
	_get() { return (this.el.getAttribute('class') || '').split(/\s+/).filter(Boolean); }
	_set(list) { this.el.setAttribute('class', list.join(' ')); }
	contains(c) { return this._get().indexOf(c) >= 0; }
	add(...cs) { const l = this._get(); for (const c of cs) if (l.indexOf(c) < 0) l.push(c); this._set(l); }
	remove(...cs) { this._set(this._get().filter(c => cs.indexOf(c) < 0)); }
	toggle(c, force) {
		const on = (force === undefined) ? !this.contains(c) : !!force;
		if (on) this.add(c); else this.remove(c);
		return on;
	}
	get length() { return this._get().length; }
}

const FORM_PROPS = [ 'value', 'checked', 'disabled', 'readOnly', 'selected', 'type', 'placeholder', 'name' ];

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };
const VOID = new Set([ 'area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'source', 'track', 'wbr' ]);

function decodeEntities(s) {
	return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, e) => {
		if (e[0] === '#')
			return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.substring(2), 16) : parseInt(e.substring(1), 10));
		return Object.prototype.hasOwnProperty.call(ENTITIES, e.toLowerCase()) ? ENTITIES[e.toLowerCase()] : m;
	});
}

function parseHtml(parent, html) {
	const doc = parent.ownerDocument;
	const tagRe = /<(\/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^\s=>\/]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+))?)*)\s*(\/?)>/g;
	const attrRe = /([^\s=>\/]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]+))?/g;
	let cur = parent, pos = 0, m;
	const text = t => { if (t) cur.appendChild(doc.createTextNode(decodeEntities(t))); };
	while ((m = tagRe.exec(html)) !== null) {
		text(html.substring(pos, m.index));
		pos = tagRe.lastIndex;
		const name = m[2].toLowerCase();
		if (m[1]) {
			for (let n = cur; n !== parent; n = n.parentNode)
				if (n.localName === name) {
					cur = n.parentNode;
					break;
				}
			continue;
		}
		const el = doc.createElement(name);
		let a;
		attrRe.lastIndex = 0;
		while ((a = attrRe.exec(m[3])) !== null) {
			let v = a[2] == null ? '' : a[2];
			if (v[0] === '"' || v[0] === "'")
				v = v.substring(1, v.length - 1);
			el.setAttribute(a[1], decodeEntities(v));
		}
		cur.appendChild(el);
		if (!m[4] && !VOID.has(name))
			cur = el;
	}
	text(html.substring(pos));
}

class Element extends Node {
	constructor(doc, tag) {
		super(doc);
		this.nodeType = 1;
		this.tagName = tag.toUpperCase();
		this.nodeName = this.tagName;
		this.attributes = new Map();
		this.listeners = {};
		this.style = {};
		this.dataset = {};
		this._props = {};
	}

	/* LuCI's dom.append() puts a bare string child here: it is parsed as HTML.
	 * A small parser (start/end tags with attributes, text, the common
	 * entities; enough to see that markup in data became elements). */
	set innerHTML(html) {
		this.textContent = '';
		parseHtml(this, String(html));
	}

	get localName() { return this.tagName.toLowerCase(); }
	get classList() { return new ClassList(this); }
	get className() { return this.getAttribute('class') || ''; }
	set className(v) { this.setAttribute('class', v); }
	get id() { return this.getAttribute('id') || ''; }
	set id(v) { this.setAttribute('id', v); }

	setAttribute(name, value) {
		name = String(name).toLowerCase();
		this.attributes.set(name, String(value));
		if (name.indexOf('data-') === 0)
			this.dataset[name.substring(5).replace(/-([a-z])/g, (m, c) => c.toUpperCase())] = String(value);
	}

	getAttribute(name) {
		name = String(name).toLowerCase();
		return this.attributes.has(name) ? this.attributes.get(name) : null;
	}

	hasAttribute(name) { return this.attributes.has(String(name).toLowerCase()); }

	removeAttribute(name) {
		name = String(name).toLowerCase();
		this.attributes.delete(name);
		if (name.indexOf('data-') === 0)
			delete this.dataset[name.substring(5).replace(/-([a-z])/g, (m, c) => c.toUpperCase())];
	}

	addEventListener(type, fn) {
		(this.listeners[type] = this.listeners[type] || []).push(fn);
	}

	removeEventListener(type, fn) {
		this.listeners[type] = (this.listeners[type] || []).filter(f => f !== fn);
	}

	dispatchEvent(ev) {
		ev.target = ev.target || this;
		const results = [];
		for (let n = this; n; n = n.parentNode) {
			ev.currentTarget = n;
			for (const fn of (n.listeners && n.listeners[ev.type]) || [])
				results.push(fn.call(n, ev));
			if (!ev.bubbles)
				break;
		}
		ev.results = results;
		return true;
	}

	/* a click; returns what the handlers returned (promises included) */
	click() {
		const ev = { type: 'click', bubbles: true, preventDefault() {}, stopPropagation() {} };
		this.dispatchEvent(ev);
		return ev.results;
	}

	closest(selector) {
		const groups = parseSelector(selector);
		for (let n = this; n && n.nodeType === 1; n = n.parentNode)
			if (groups.some(g => matchChain(n, g, null)))
				return n;
		return null;
	}

	matches(selector) {
		return parseSelector(selector).some(g => matchChain(this, g, null));
	}
}

/* form control properties reflect their attributes, as in a browser */
for (const p of FORM_PROPS) {
	const attr = p.toLowerCase();
	Object.defineProperty(Element.prototype, p, {
		get() {
			if (Object.prototype.hasOwnProperty.call(this._props, p))
				return this._props[p];
			if ([ 'checked', 'disabled', 'readOnly', 'selected' ].indexOf(p) >= 0)
				return this.hasAttribute(attr);
			if (p === 'value' && this.tagName === 'SELECT') {
				const opts = this.querySelectorAll('option');
				const sel = opts.find(o => o.selected) || opts[0];
				return sel ? sel.value : '';
			}
			const v = this.getAttribute(attr);
			return (v == null) ? '' : v;
		},
		set(v) {
			if (p === 'value' && this.tagName === 'SELECT') {
				for (const o of this.querySelectorAll('option'))
					o._props.selected = (o.value === String(v));
				return;
			}
			this._props[p] = ([ 'checked', 'disabled', 'readOnly', 'selected' ].indexOf(p) >= 0) ? !!v : String(v);
		}
	});
}

class Document extends Node {
	constructor() {
		super(null);
		this.ownerDocument = this;
		this.nodeType = 9;
		this.documentElement = this.createElement('html');
		this.head = this.createElement('head');
		this.body = this.createElement('body');
		this.documentElement.appendChild(this.head);
		this.documentElement.appendChild(this.body);
		this.appendChild(this.documentElement);
	}

	createElement(tag) { return new Element(this, tag); }
	createElementNS(ns, tag) { return new Element(this, tag); }
	createTextNode(data) { return new Text(this, data); }
	createDocumentFragment() { return new DocumentFragment(this); }
	getElementById(id) { return this.querySelector('#' + id.replace(/([.:\[\]])/g, '\\$1')); }
}

/* ---- selectors ---- */

function parseCompound(text) {
	const c = { tag: null, id: null, classes: [], attrs: [] };
	const re = /^(\*|[a-zA-Z][a-zA-Z0-9-]*)|#((?:\\.|[a-zA-Z0-9_-])+)|\.([a-zA-Z0-9_-]+)|\[([a-zA-Z0-9_-]+)(?:([~^$*]?=)(?:"([^"]*)"|'([^']*)'|([^\]]*)))?\]/y;
	let pos = 0;
	while (pos < text.length) {
		re.lastIndex = pos;
		const m = re.exec(text);
		if (!m || m.index !== pos)
			throw new Error('minidom: unsupported selector ' + JSON.stringify(text));
		if (m[1] && m[1] !== '*') c.tag = m[1].toUpperCase();
		else if (m[2]) c.id = m[2].replace(/\\(.)/g, '$1');
		else if (m[3]) c.classes.push(m[3]);
		else if (m[4]) c.attrs.push({ name: m[4].toLowerCase(), op: m[5] || null, value: m[6] != null ? m[6] : m[7] != null ? m[7] : m[8] });
		pos = re.lastIndex;
	}
	return c;
}

function parseSelector(selector) {
	return selector.split(',').map(group => group.trim().split(/\s+/).filter(Boolean).map(parseCompound));
}

function matchCompound(el, c) {
	if (c.tag && el.tagName !== c.tag) return false;
	if (c.id && el.getAttribute('id') !== c.id) return false;
	for (const cl of c.classes)
		if (!el.classList.contains(cl)) return false;
	for (const a of c.attrs) {
		const v = el.getAttribute(a.name);
		if (v == null) return false;
		if (a.op === '=' && v !== a.value) return false;
		if (a.op === '~=' && v.split(/\s+/).indexOf(a.value) < 0) return false;
		if (a.op === '^=' && v.indexOf(a.value) !== 0) return false;
		if (a.op === '$=' && !v.endsWith(a.value)) return false;
		if (a.op === '*=' && v.indexOf(a.value) < 0) return false;
	}
	return true;
}

function matchChain(el, chain, root) {
	if (!matchCompound(el, chain[chain.length - 1]))
		return false;
	let i = chain.length - 2, n = el.parentNode;
	while (i >= 0) {
		while (n && n !== root && !(n.nodeType === 1 && matchCompound(n, chain[i])))
			n = n.parentNode;
		if (!n || n === root)
			return false;
		i--;
		n = n.parentNode;
	}
	return true;
}

module.exports = { Document, Element, Text, DocumentFragment, Node };
