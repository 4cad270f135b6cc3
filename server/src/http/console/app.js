// The Latchkey web console: one module, no dependencies. Every view is a
// <template> in index.html, cloned and filled with textContent (never
// HTML from data). The page talks to the REST API under /v1 with the
// session cookie the server set at sign-in; changes carry the session's
// CSRF token in X-Latchkey-CSRF. Nothing is kept in the browser's storage,
// and a token's secret lives only in the "copy it now" view: leaving it
// drops the secret from the page and from memory.

const PAGE_SIZE = 100;
const CSRF_HEADER = 'X-Latchkey-CSRF';

/** What this page knows; lost on reload, by design. */
const state = {
  csrf: '',
  who: null,
  status: 'active',
  /** `after` of each page shown so far; the last is the current page's. */
  cursors: [0],
  /** The next page's `after`, or null on the last page. */
  nextAfter: null,
  /** A message to show once on the next view (after a change). */
  notice: '',
};

class ApiFailure extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `the server answered ${status}`);
    this.status = status;
    this.name = body && body.name ? body.name : '';
  }
}

const main = document.getElementById('main');

/** Calls the API; the parsed JSON body, or null for 204. */
async function api(method, path, body) {
  const headers = { [CSRF_HEADER]: state.csrf, Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiFailure(0, { message: 'The server did not answer. Check that it runs, then try again.' });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401 && path !== '/v1/session') {
    signedOut('Your session ended (it timed out, or its token or user was stopped). Sign in again.');
    throw new ApiFailure(401, data);
  }
  if (!response.ok) throw new ApiFailure(response.status, data);
  return data;
}

// ---- small DOM helpers ----------------------------------------------------

function view(id) {
  const fragment = document.getElementById(id).content.cloneNode(true);
  main.replaceChildren(fragment);
  const heading = main.querySelector('h1');
  if (heading) heading.focus({ preventScroll: true });
  return main;
}

function slot(root, name) {
  return root.querySelector(`[data-slot="${name}"]`);
}

function showError(root, message) {
  const box = slot(root, 'error');
  box.textContent = message;
  box.hidden = !message;
  if (message) box.focus?.();
}

function showNotice(root, message) {
  const box = slot(root, 'notice');
  if (box) box.textContent = message;
}

// dateStyle and timeStyle cannot be mixed with timeZoneName: spelled out.
const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  timeZoneName: 'short',
});

/** An RFC 3339 time in the browser's time zone; `none` when absent. */
function when(text, none) {
  if (!text) return none;
  const at = new Date(text);
  return Number.isNaN(at.getTime()) ? text : dateTime.format(at);
}

function usedText(token) {
  if (!token.last_used_at) return 'Never used';
  const at = when(token.last_used_at, '');
  return token.last_used_address ? `${at} from ${token.last_used_address}` : at;
}

function lines(text) {
  return text.split(/[\n,]/).map((line) => line.trim()).filter((line) => line.length > 0);
}

/** Asks with the page's own dialog; resolves true on "Yes". */
function confirmAction(question, yes) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = question;
  const yesButton = document.getElementById('confirm-yes');
  const noButton = document.getElementById('confirm-no');
  yesButton.textContent = yes;
  return new Promise((resolve) => {
    const finish = (answer) => {
      yesButton.removeEventListener('click', onYes);
      noButton.removeEventListener('click', onNo);
      dialog.removeEventListener('cancel', onNo);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onYes = () => finish(true);
    const onNo = () => finish(false);
    yesButton.addEventListener('click', onYes);
    noButton.addEventListener('click', onNo);
    dialog.addEventListener('cancel', onNo);
    dialog.showModal();
    noButton.focus();
  });
}

function busy(button, work) {
  return async (event) => {
    event.preventDefault();
    if (button.disabled) return;
    button.disabled = true;
    try {
      await work();
    } finally {
      button.disabled = false;
    }
  };
}

// ---- session -------------------------------------------------------------

function signedIn(session) {
  state.csrf = session.csrf_token;
  state.who = session;
  const who = document.getElementById('who');
  const name = session.username ?? `user ${session.user_id}`;
  who.textContent = `${name} · ${session.authenticated_with === 'token' ? 'token' : 'password'}`;
  document.getElementById('sign-out').setAttribute('aria-label', `Sign out ${name}`);
  document.getElementById('sign-out').title = `Signed in as ${name}`;
  document.getElementById('nav').classList.remove('out');
}

function signedOut(message, calm = false) {
  state.csrf = '';
  state.who = null;
  document.getElementById('nav').classList.add('out');
  state.signInMessage = message || state.signInMessage || '';
  state.signInCalm = calm;
  if (location.hash !== '#/sign-in') {
    location.hash = '#/sign-in';
  } else {
    render();
  }
}

function renderSignIn() {
  const root = view('view-sign-in');
  if (state.signInMessage && state.signInCalm) showNotice(root, state.signInMessage);
  else if (state.signInMessage) showError(root, state.signInMessage);
  state.signInMessage = '';
  const passwordForm = root.querySelector('#password-form');
  const tokenForm = root.querySelector('#token-form');
  const attempt = async (body, form) => {
    showError(root, '');
    try {
      const session = await api('POST', '/v1/session', body);
      form.reset();
      signedIn(session);
      navigate('#/tokens');
    } catch (error) {
      form.querySelector('input[type="password"]').value = '';
      showError(root, signInProblem(error));
    }
  };
  passwordForm.addEventListener(
    'submit',
    busy(passwordForm.querySelector('button'), () =>
      attempt({ username: passwordForm.username.value, password: passwordForm.password.value }, passwordForm),
    ),
  );
  tokenForm.addEventListener(
    'submit',
    busy(tokenForm.querySelector('button'), () => attempt({ token: tokenForm.token.value.trim() }, tokenForm)),
  );
  root.querySelector('#username').focus();
}

function signInProblem(error) {
  switch (error.status) {
    case 401:
      return 'Sign-in failed: the username and password, or the token, were not accepted. Check them and try again.';
    case 403:
      return `Sign-in refused: ${error.message}`;
    case 429:
      return 'Too many failed sign-ins from here. Wait a minute, then try again.';
    default:
      return `Sign-in failed: ${error.message}`;
  }
}

// ---- tokens table ----------------------------------------------------------

async function renderTokens(params) {
  const status = ['active', 'expired', 'revoked', 'all'].includes(params.get('status'))
    ? params.get('status')
    : state.status;
  if (status !== state.status) {
    state.status = status;
    state.cursors = [0];
  }
  const root = view('view-tokens');
  const filter = root.querySelector('#status-filter');
  filter.value = status;
  filter.addEventListener('change', () => {
    state.cursors = [0];
    location.hash = `#/tokens?status=${filter.value}`;
  });
  showNotice(root, takeNotice());
  const body = root.querySelector('#tokens-body');
  const empty = root.querySelector('#tokens-empty');
  const prev = root.querySelector('#page-prev');
  const next = root.querySelector('#page-next');
  const range = root.querySelector('#page-range');
  prev.disabled = true;
  next.disabled = true;
  range.textContent = 'Loading…';

  const load = async () => {
    const after = state.cursors[state.cursors.length - 1];
    const query = `status=${status}&limit=${PAGE_SIZE}${after ? `&after=${after}` : ''}`;
    let page;
    try {
      page = await api('GET', `/v1/tokens?${query}`);
    } catch (error) {
      if (error.status === 401) return;
      range.textContent = '';
      showError(
        root,
        error.status === 403
          ? permissionProblem(error)
          : `Could not load your tokens: ${error.message}. Reload the page to try again.`,
      );
      return;
    }
    showError(root, '');
    state.nextAfter = page.next_after ?? null;
    body.replaceChildren(...page.tokens.map(tokenRow));
    const first = (state.cursors.length - 1) * PAGE_SIZE;
    if (page.tokens.length === 0) {
      empty.hidden = false;
      const offerCreate = status === 'all' || status === 'active';
      slot(empty, 'empty-text').textContent = first > 0
        ? 'No more tokens on this page.'
        : status === 'all'
          ? 'You have no tokens yet.'
          : `You have no ${status} tokens.`;
      const action = slot(empty, 'empty-action');
      if (offerCreate) {
        action.textContent = 'Create a token';
        action.href = '#/new';
      } else {
        action.textContent = 'Show all tokens';
        action.href = '#/tokens?status=all';
      }
      range.textContent = '';
    } else {
      empty.hidden = true;
      range.textContent = `Tokens ${first + 1}–${first + page.tokens.length}`;
    }
    prev.disabled = state.cursors.length <= 1;
    next.disabled = state.nextAfter === null;
  };

  prev.addEventListener('click', () => {
    if (state.cursors.length > 1) state.cursors.pop();
    load();
  });
  next.addEventListener('click', () => {
    if (state.nextAfter !== null) state.cursors.push(state.nextAfter);
    load();
  });
  root.querySelector('#revoke-all').addEventListener('click', async (event) => {
    if (!(await confirmAction('Revoke every one of your tokens? Anything using them stops working.', 'Revoke all'))) return;
    await changeAll(root, event.target, 'POST', '/v1/tokens/revoke-all', 'revoked', load);
  });
  root.querySelector('#delete-all').addEventListener('click', async (event) => {
    if (!(await confirmAction('Delete every one of your tokens? This cannot be undone.', 'Delete all'))) return;
    state.cursors = [0];
    await changeAll(root, event.target, 'DELETE', '/v1/tokens', 'deleted', load);
  });
  body.addEventListener('click', async (event) => {
    const button = event.target.closest('button[data-id]');
    if (!button) return;
    const { id, name } = button.dataset;
    if (!(await confirmAction(`Delete the token “${name}”? This cannot be undone.`, 'Delete'))) return;
    button.disabled = true;
    try {
      await api('DELETE', `/v1/tokens/${id}`);
      showNotice(root, `Deleted “${name}”.`);
      await load();
    } catch (error) {
      button.disabled = false;
      if (error.status !== 401) showError(root, `Could not delete “${name}”: ${error.message}`);
    }
  });
  await load();
}

async function changeAll(root, button, method, path, done, reload) {
  button.disabled = true;
  try {
    const { count } = await api(method, path);
    showNotice(root, `${count} ${count === 1 ? 'token' : 'tokens'} ${done}.`);
    await reload();
  } catch (error) {
    if (error.status !== 401) showError(root, `That did not work: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

function statusBadge(element, status) {
  element.textContent = status;
  element.className = `badge ${status}`;
}

function tokenRow(token) {
  const row = document.getElementById('row-token').content.firstElementChild.cloneNode(true);
  row.dataset.id = token.id;
  const link = slot(row, 'name');
  link.textContent = token.name;
  link.href = `#/tokens/${token.id}`;
  slot(row, 'description').textContent = token.description;
  statusBadge(slot(row, 'status'), token.status);
  slot(row, 'expires').textContent = when(token.expires_at, 'Never');
  slot(row, 'used').textContent = usedText(token);
  const remove = slot(row, 'delete');
  remove.dataset.id = token.id;
  remove.dataset.name = token.name;
  remove.setAttribute('aria-label', `Delete ${token.name}`);
  return row;
}

function takeNotice() {
  const notice = state.notice;
  state.notice = '';
  return notice;
}

// ---- create ---------------------------------------------------------------

function lifetime(choice, dateText) {
  switch (choice) {
    case 'default':
    case 'keep':
      return {};
    case 'date':
      if (!dateText) throw new Error('Pick the expiry date, or another choice.');
      // The end of that day in the browser's time zone.
      return { expires_at: new Date(`${dateText}T23:59:59`).toISOString() };
    default:
      return { expires_in: choice };
  }
}

function renderNew() {
  const root = view('view-new');
  const form = root.querySelector('#create-form');
  const expiry = form.querySelector('#expiry');
  const dateField = form.querySelector('#expiry-date-field');
  expiry.addEventListener('change', () => {
    dateField.hidden = expiry.value !== 'date';
  });
  form.addEventListener(
    'submit',
    busy(form.querySelector('#create-submit'), async () => {
      showError(root, '');
      let request;
      try {
        request = {
          name: form.name.value.trim(),
          description: form.description.value.trim(),
          scopes: lines(form.scopes.value),
          networks: lines(form.networks.value),
          ...lifetime(expiry.value, form.querySelector('#expiry-date').value),
        };
      } catch (error) {
        showError(root, error.message);
        return;
      }
      try {
        const issued = await api('POST', '/v1/tokens', request);
        renderSecret(issued, 'Token created');
      } catch (error) {
        if (error.status !== 401) showError(root, changeProblem(error, 'The token was not created'));
      }
    }),
  );
  form.querySelector('#name').focus();
}

/** What went wrong with a create or a change, and what to do about it. */
function changeProblem(error, failed) {
  switch (error.name) {
    case 'PersonalAccessTokenAlreadyExists':
      return 'You have a token with that name already. Pick another name.';
    case 'PersonalAccessTokensLimitReached':
      return 'You hold as many tokens as the server allows. Delete one you no longer need, then try again.';
    case 'InvalidScope':
      return `A scope is not valid: ${error.message}. Use the forms listed under Scopes.`;
    case 'InvalidNetwork':
      return `A network is not valid: ${error.message}. Give an address or a CIDR such as 10.0.0.0/8.`;
    case 'InsufficientScope':
    case 'TokenManagementNotAllowed':
      return permissionProblem(error);
    default:
      return `${failed}: ${error.message}`;
  }
}

/** What to do when this session may not do something. */
function permissionProblem(error) {
  if (state.who && state.who.authenticated_with === 'token') {
    return `The token you signed in with may not do that (${error.message}). Sign out and sign in with your password, or with a token that has the scope.`;
  }
  return `Not allowed: ${error.message}.`;
}

// ---- the secret, once -------------------------------------------------------

/** Shows an issued secret. It stays in this view's DOM only; any other
 * view replaces the DOM, and nothing else holds it. */
function renderSecret(issued, title) {
  const root = view('view-secret');
  slot(root, 'title').textContent = title;
  slot(root, 'name').textContent = `“${issued.name}”`;
  slot(root, 'expires').textContent = issued.expires_at
    ? `It expires ${when(issued.expires_at, '')}.`
    : 'It never expires.';
  const secret = root.querySelector('#secret');
  secret.value = issued.token;
  secret.select();
  const done = root.querySelector('#secret-done');
  done.href = `#/tokens/${issued.id}`;
  // The secret view has no address of its own: leaving it for the page
  // already in the address bar must still render that page.
  done.addEventListener('click', (event) => {
    event.preventDefault();
    navigate(done.getAttribute('href'));
  });
  const copied = slot(root, 'copied');
  root.querySelector('#copy-secret').addEventListener('click', async () => {
    secret.select();
    try {
      await navigator.clipboard.writeText(secret.value);
      copied.textContent = 'Copied to the clipboard.';
    } catch {
      // No clipboard API (a plain-HTTP page on another host): the text is
      // selected for the user to copy.
      const done = document.execCommand && document.execCommand('copy');
      copied.textContent = done ? 'Copied to the clipboard.' : 'Press Ctrl+C (⌘C) to copy the selected token.';
    }
  });
}

// ---- detail -----------------------------------------------------------------

async function renderDetail(id) {
  const root = view('view-detail');
  showNotice(root, takeNotice());
  let token;
  try {
    token = await api('GET', `/v1/tokens/${id}`);
  } catch (error) {
    if (error.status === 401) return;
    const missing = view('view-missing');
    showError(
      missing,
      error.status === 404
        ? 'There is no such token: it was deleted, or it belongs to someone else.'
        : `Could not load the token: ${error.message}`,
    );
    return;
  }
  fillDetail(root, token);
  const revoke = root.querySelector('#revoke');
  revoke.addEventListener('click', async () => {
    if (!(await confirmAction(`Revoke “${token.name}”? It stops working at once.`, 'Revoke'))) return;
    try {
      await api('POST', `/v1/tokens/${id}/revoke`);
      state.notice = `Revoked “${token.name}”.`;
      await renderDetail(id);
    } catch (error) {
      if (error.status !== 401) showError(root, `Could not revoke: ${error.message}`);
    }
  });
  const regenerate = root.querySelector('#regenerate');
  regenerate.addEventListener(
    'click',
    busy(regenerate, async () => {
      // A revoked token comes back only when asked to: the flag is sent
      // for a token this page shows as stopped, never for an active one.
      const stopped = token.status !== 'active';
      const ask = stopped
        ? `Regenerate “${token.name}”? It becomes active again with a new secret; the old secret stays refused.`
        : `Regenerate “${token.name}”? The current secret stops working at once.`;
      if (!(await confirmAction(ask, 'Regenerate'))) return;
      showError(root, '');
      try {
        const choice = root.querySelector('#rotate-expiry').value;
        const body = { ...lifetime(choice, ''), ...(stopped ? { reactivate: true } : {}) };
        const issued = await api('POST', `/v1/tokens/${id}/rotate`, body);
        renderSecret({ ...issued, name: issued.name || token.name }, stopped ? 'Token active again' : 'New secret');
      } catch (error) {
        if (error.status !== 401) showError(root, changeProblem(error, 'Could not regenerate'));
      }
    }),
  );
  // Scopes and networks: each list edited as one change of the token.
  const editAccess = async (change, done) => {
    showError(root, '');
    try {
      const updated = await api('PATCH', `/v1/tokens/${id}/access`, change);
      if (updated === null) {
        // 204: this session signed in with this token, and the change
        // ended it; the next request says so.
        await renderDetail(id);
        return false;
      }
      token = updated;
      fillDetail(root, token);
      showNotice(root, done);
      return true;
    } catch (error) {
      if (error.status !== 401) showError(root, changeProblem(error, 'Not changed'));
      return false;
    }
  };
  for (const kind of ['scope', 'network']) {
    const plural = `${kind}s`;
    const form = root.querySelector(`#add-${kind}-form`);
    const input = form.querySelector('input');
    form.addEventListener(
      'submit',
      busy(form.querySelector('button'), async () => {
        const item = input.value.trim();
        if (!item) return;
        if (await editAccess({ [`add_${plural}`]: [item] }, `Added ${item}.`)) input.value = '';
        input.focus();
      }),
    );
    slot(root, plural).addEventListener('click', async (event) => {
      const button = event.target.closest('button[data-item]');
      if (!button) return;
      const { item } = button.dataset;
      if (token[plural].length === 1 && !(await confirmAction(emptyQuestion(kind, token.name), 'Delete'))) return;
      button.disabled = true;
      // Done, the row is gone; refused, it stays and can be tried again.
      if (!(await editAccess({ [`remove_${plural}`]: [item] }, `Deleted ${item}.`))) button.disabled = false;
      input.focus();
    });
    const clear = root.querySelector(`#clear-${plural}`);
    clear.addEventListener(
      'click',
      busy(clear, async () => {
        if (!(await confirmAction(emptyQuestion(kind, token.name, true), 'Delete all'))) return;
        await editAccess({ [`clear_${plural}`]: true }, `Deleted every ${kind}.`);
        input.focus();
      }),
    );
  }
  const rename = root.querySelector('#rename-form');
  rename.addEventListener(
    'submit',
    busy(rename.querySelector('#rename-submit'), async () => {
      showError(root, '');
      const change = { name: rename.name.value.trim(), description: rename.description.value.trim() };
      try {
        token = await api('PATCH', `/v1/tokens/${id}`, change);
        fillDetail(root, token);
        showNotice(root, 'Saved.');
      } catch (error) {
        if (error.status !== 401) showError(root, changeProblem(error, 'Not saved'));
      }
    }),
  );
  root.querySelector('#delete').addEventListener('click', async () => {
    if (!(await confirmAction(`Delete “${token.name}”? This cannot be undone.`, 'Delete'))) return;
    try {
      await api('DELETE', `/v1/tokens/${id}`);
      state.notice = `Deleted “${token.name}”.`;
      navigate('#/tokens');
    } catch (error) {
      if (error.status !== 401) showError(root, `Could not delete: ${error.message}`);
    }
  });
}

/** What taking the last (or every) scope or network away means. */
function emptyQuestion(kind, name, all = false) {
  const what = all ? `Delete every ${kind} of “${name}”?` : `Delete the last ${kind} of “${name}”?`;
  return kind === 'scope'
    ? `${what} With no scopes the token has full access.`
    : `${what} With no networks the token can be used from any address.`;
}

/** The rows of a scopes or networks table, or the one row saying none. */
function accessRows(items, kind, none) {
  if (!items.length) {
    const row = document.getElementById('row-access-none').content.firstElementChild.cloneNode(true);
    slot(row, 'none').textContent = none;
    return [row];
  }
  return items.map((item) => {
    const row = document.getElementById('row-access').content.firstElementChild.cloneNode(true);
    slot(row, 'item').textContent = item;
    const remove = slot(row, 'remove');
    remove.dataset.item = item;
    remove.setAttribute('aria-label', `Delete ${kind} ${item}`);
    return row;
  });
}

/** Whether the token's expiry has passed (revoked or not). */
function pastExpiry(token) {
  return Boolean(token.expires_at) && new Date(token.expires_at).getTime() <= Date.now();
}

function fillDetail(root, token) {
  slot(root, 'name').textContent = token.name;
  statusBadge(slot(root, 'status'), token.status);
  slot(root, 'description').textContent = token.description || '—';
  slot(root, 'id').textContent = String(token.id);
  slot(root, 'scopes').replaceChildren(...accessRows(token.scopes, 'scope', 'None: full access'));
  slot(root, 'networks').replaceChildren(...accessRows(token.networks, 'network', 'None: any address'));
  root.querySelector('#clear-scopes').hidden = token.scopes.length === 0;
  root.querySelector('#clear-networks').hidden = token.networks.length === 0;
  slot(root, 'created').textContent = when(token.created_at, '—');
  slot(root, 'expires').textContent = when(token.expires_at, 'Never');
  slot(root, 'revoked').textContent = when(token.revoked_at, 'No');
  slot(root, 'used').textContent = usedText(token);
  root.querySelector('#edit-name').value = token.name;
  root.querySelector('#edit-description').value = token.description;
  const active = token.status === 'active';
  root.querySelector('#revoke').hidden = !active;
  // Regenerate is offered whatever the status: for a revoked or expired
  // token it brings it back. An expiry that has passed cannot be kept.
  const expiry = root.querySelector('#rotate-expiry');
  const keep = expiry.querySelector('option[value="keep"]');
  const passed = pastExpiry(token);
  keep.hidden = passed;
  keep.disabled = passed;
  if (passed && expiry.value === 'keep') expiry.value = '30d';
  const hint = slot(root, 'regenerate-hint');
  hint.hidden = active;
  hint.textContent = token.status === 'revoked'
    ? 'Revoked. Regenerate brings it back: a new secret, the same scopes and networks; the old secret stays refused.'
    : 'Expired. Regenerate brings it back with a new secret and the lifetime you pick.';
  for (const card of root.querySelectorAll('.waiting')) card.classList.remove('waiting');
}

// ---- routing ------------------------------------------------------------------

/** Shows the page at `hash`, also when the address bar has it already. */
function navigate(hash) {
  if (location.hash === hash) {
    render();
  } else {
    location.hash = hash;
  }
}

async function render() {
  const hash = location.hash || '#/tokens';
  const [path, query] = hash.slice(1).split('?');
  const params = new URLSearchParams(query || '');
  if (path === '/sign-in') {
    if (state.who) {
      location.hash = '#/tokens';
      return;
    }
    renderSignIn();
    return;
  }
  if (!state.who) {
    signedOut('');
    return;
  }
  const detail = path.match(/^\/tokens\/(\d+)$/);
  if (detail) return renderDetail(detail[1]);
  if (path === '/new') return renderNew();
  return renderTokens(params);
}

async function start() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  document.getElementById('zone').textContent = `Times are shown in ${zone}.`;
  document.getElementById('sign-out').addEventListener('click', async () => {
    try {
      await api('DELETE', '/v1/session');
    } catch {
      // Signed out here either way.
    }
    signedOut('You are signed out.', true);
  });
  window.addEventListener('hashchange', () => render());
  try {
    signedIn(await api('GET', '/v1/session'));
  } catch (error) {
    // 401: not signed in. Anything else is worth saying on the sign-in page.
    if (error.status !== 401) state.signInMessage = error.message;
  }
  await render();
}

start();
