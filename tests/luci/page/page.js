/*
 * The static test page for the screenshots (tests/luci/screenshot.py): runs one
 * view of luci-app-cpe-tunnel in the browser with the same stand-ins as the Node
 * tests (createLuciStandins from tests/luci/standins.js) on the real DOM.
 * screenshot.py inlines standins.js, the app's module sources (SOURCES) and the
 * page data (PAGE: view name, the router's clock, status reply, uci sections)
 * before this script.
 */
(function() {
	'use strict';

	/* the views compute ages from the browser clock: pin it to the sample's time */
	if (PAGE.now)
		Date.now = function() { return PAGE.now * 1000; };

	var env = createLuciStandins({
		document: document,
		window: window,
		sources: function(name) { return SOURCES[name]; }
	});
	env.installGlobals(window);

	if (PAGE.status)
		env.rpc.reply('cpe_tunnel', 'status', PAGE.status);
	env.uci.seed('cpe_tunnel', PAGE.uci || []);

	var main = document.getElementById('maincontent');

	function done(error) {
		if (error) {
			main.appendChild(E('pre', { 'class': 'page-error' }, [ String(error && error.stack || error) ]));
			document.body.setAttribute('data-error', String(error));
		}
		document.body.setAttribute('data-height', String(document.documentElement.scrollHeight));
		document.body.setAttribute('data-rendered', '1');
	}

	env.runView('view.cpe_tunnel.' + PAGE.view, main).then(function(r) {
		var footer = r.view.addFooter();
		if (footer)
			main.appendChild(footer);
		done();
	}).catch(done);
})();
