// The JSON API as the console calls it: the session cookie (same origin), the CSRF token
// on every write, and errors as ApiError with the status, so that a page can tell a
// refusal for the role (403) from a bad value (400/422) or an expired session (401).

export class ApiError extends Error {
  constructor(status, detail, requiredRole) {
    super(detail);
    this.status = status;
    this.requiredRole = requiredRole || null;
  }
}

const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };
const session = { user: null, role: null, csrf: null };
let onSignedOut = () => {};

export function currentSession() {
  return { ...session };
}

export function setSession(answer) {
  session.user = answer ? answer.user : null;
  session.role = answer ? answer.role : null;
  session.csrf = answer ? answer.csrf : null;
}

// Called when the API answers 401: the session ended (expired, signed out elsewhere).
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export function can(role) {
  return session.role !== null && ROLE_RANK[session.role] >= ROLE_RANK[role];
}

function detailOf(data, status) {
  if (!data) return `HTTP ${status}`;
  const detail = data.detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  return typeof detail === "string" ? detail : JSON.stringify(detail ?? data);
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && session.csrf) {
    headers["X-CSRF-Token"] = session.csrf;
  }
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401 && path !== "/api/v1/session") {
      setSession(null);
      onSignedOut();
    }
    throw new ApiError(response.status, detailOf(data, response.status), data?.required_role);
  }
  return data;
}

export const get = (path, query) => {
  const q = new URLSearchParams(
    Object.entries(query || {}).filter(([, v]) => v !== undefined && v !== null && v !== ""),
  ).toString();
  return api("GET", q ? `${path}?${q}` : path);
};

// Evidence pictures by name (the media entries carry signed links for platforms; the
// console reads them with its session instead).
export function evidenceUrl(name) {
  return `/api/v1/evidence/${encodeURIComponent(name)}`;
}
