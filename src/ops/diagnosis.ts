/**
 * Plain-words causes and fixes for what Entra and Graph answer, as tables (used by `check` and
 * the operator-facing log lines). AADSTS codes: graph-api-facts §4.8; Graph codes: §1.9.
 */
export interface Diagnosis {
  cause: string;
  fix: string;
}

export const AADSTS_DIAGNOSES: Readonly<Record<string, Diagnosis>> = {
  '7000215': { cause: 'the client secret is wrong', fix: 'copy the secret *Value* (not the Secret ID) from Certificates & secrets into graph.auth.clientSecret' },
  '7000222': { cause: 'the client secret has expired', fix: 'create a new client secret under Certificates & secrets and update graph.auth.clientSecret' },
  '700016': { cause: 'no application with this client ID exists in the tenant', fix: 'check graph.clientId (Application (client) ID) and graph.tenantId, and that the app is registered in this tenant/cloud' },
  '90002': { cause: 'the tenant was not found', fix: 'check graph.tenantId (Directory (tenant) ID) and graph.cloud/authorityHost' },
  '50126': { cause: 'the username or password is wrong', fix: 'check graph.auth.username and graph.auth.password' },
  '50076': { cause: 'the account requires multi-factor authentication, which the password flow cannot do', fix: 'use an app-only method (graph.auth.method: certificate or clientSecret) with application Mail.Send' },
  '50079': { cause: 'the account must register for multi-factor authentication, which the password flow cannot do', fix: 'finish MFA registration for the account, or use an app-only method (certificate or clientSecret)' },
  '53003': { cause: 'a Conditional Access policy blocks this sign-in', fix: 'exclude the relay\'s sign-in from the policy, or use an app-only method (certificate or clientSecret)' },
  '65001': { cause: 'nobody has consented to the app\'s permissions', fix: 'in API permissions, add Mail.Send and click "Grant admin consent"' },
  '7000218': { cause: 'the app needs a credential for this flow', fix: 'enable "Allow public client flows" under Authentication (password method), or use clientSecret/certificate' },
  '700027': { cause: 'the certificate is not registered on the app (or the key does not match it)', fix: 'upload the certificate (public part) under Certificates & secrets' },
};

export const GRAPH_DIAGNOSES: ReadonlyArray<{ status: number; code?: string; message?: RegExp; diagnosis: Diagnosis }> = [
  {
    status: 403,
    code: 'ErrorAccessDenied',
    message: /Access to OData is disabled/i,
    diagnosis: {
      cause: 'the mailbox is outside the scope the app may use (application access policy or Exchange RBAC for Applications)',
      fix: 'add the mailbox to the group or management scope of the app\'s access policy / RBAC assignment (changes can take an hour to apply)',
    },
  },
  { status: 403, code: 'ErrorSendAsDenied', diagnosis: { cause: 'the mailbox may not send as the From address', fix: 'grant Send As on that address to the mailbox in Exchange, or send from graph.mailbox' } },
  {
    status: 403,
    code: 'ErrorAccessDenied',
    diagnosis: {
      cause: 'the app lacks the permission to send, or the mailbox is outside its RBAC / application access policy scope',
      fix: 'add Mail.Send as an *Application* permission with admin consent; if Exchange RBAC for Applications or an application access policy is used, include this mailbox in its scope',
    },
  },
  { status: 404, code: 'MailboxNotEnabledForRESTAPI', diagnosis: { cause: 'the mailbox is inactive, soft-deleted or on-premises', fix: 'use a licensed Exchange Online mailbox for graph.mailbox' } },
  { status: 404, code: 'ErrorInvalidUser', diagnosis: { cause: 'no such user in the tenant', fix: 'check graph.mailbox (the UPN or primary SMTP address of a mailbox in this tenant)' } },
  { status: 404, diagnosis: { cause: 'the mailbox was not found', fix: 'check graph.mailbox' } },
  { status: 401, diagnosis: { cause: 'Graph rejected the token', fix: 'check that graph.endpoint belongs to the same cloud as graph.authorityHost, and that Mail.Send is granted' } },
];

export function diagnoseAadsts(code: string | undefined): Diagnosis | null {
  return code ? (AADSTS_DIAGNOSES[code] ?? null) : null;
}

export function diagnoseGraph(status: number, code: string | undefined, message?: string): Diagnosis | null {
  return (
    GRAPH_DIAGNOSES.find((row) => row.status === status && (row.code === undefined || row.code === code) && (row.message === undefined || row.message.test(message ?? '')))?.diagnosis ?? null
  );
}

export const MISSING_MAIL_SEND: Diagnosis = {
  cause: 'the token carries no Mail.Send permission',
  fix: 'in API permissions add Microsoft Graph > Mail.Send (Application for app-only methods, Delegated for password/deviceCode) and click "Grant admin consent"',
};

/** A network failure's message as the transport words it ("<cause>; fix: <fix>", graph/network-cause.ts) as a Diagnosis. */
export function diagnoseNetwork(message: string): Diagnosis | null {
  const at = message.lastIndexOf('; fix: ');
  return at === -1 ? null : { cause: message.slice(0, at), fix: message.slice(at + '; fix: '.length) };
}
